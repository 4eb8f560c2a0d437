"""PyTorch peer for the stacked-autoencoder benchmark: the SdA recipe of
../shared/reference/REFERENCE.md, written for this project.

784-1000-1000-1000-10, sigmoid units. Pretraining: each layer a tied DAE, cross-entropy, masking
0.1 / 0.2 / 0.3, SGD lr 0.05, batch 32, EPOCHS per layer, on all 60,000 training images (each
layer on the clean codes of the one below). Fine-tuning: softmax output initialised at zero, SGD
lr 0.1, batch 32, FINETUNE epochs. Prints one JSON object: pretraining and fine-tuning seconds,
and the test accuracy.

    python3 bench/peers/torch_sda.py DATA_DIR [--epochs 15] [--finetune 30] [--threads 2] [--seed 1] [--device cpu|cuda]
"""
import argparse, json, math, os, sys, time
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from torch_dae import idx_images


def idx_labels(path):
    import gzip
    with gzip.open(path) as f:
        data = f.read()
    return np.frombuffer(data, np.uint8, offset=8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--finetune", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    Xtr = torch.tensor(idx_images(f"{a.data}/train-images-idx3-ubyte.gz").astype(np.float32) / 255, device=dev)
    ytr = torch.tensor(idx_labels(f"{a.data}/train-labels-idx1-ubyte.gz").astype(np.int64), device=dev)
    Xte = torch.tensor(idx_images(f"{a.data}/t10k-images-idx3-ubyte.gz").astype(np.float32) / 255, device=dev)
    yte = torch.tensor(idx_labels(f"{a.data}/t10k-labels-idx1-ubyte.gz").astype(np.int64), device=dev)
    sizes, levels = [1000, 1000, 1000], [0.1, 0.2, 0.3]

    def init(d, k):
        r = 4 * math.sqrt(6 / (d + k))
        return ((torch.rand(d, k, device=dev) * 2 - 1) * r).requires_grad_(), torch.zeros(k, device=dev, requires_grad=True)

    sync()
    t0 = time.perf_counter()
    layers, H = [], Xtr
    for k, level in zip(sizes, levels):
        d = H.shape[1]
        W, b = init(d, k)
        c = torch.zeros(d, device=dev, requires_grad=True)
        opt = torch.optim.SGD([W, b, c], lr=0.05)
        for _ in range(a.epochs):
            perm = torch.randperm(H.shape[0], device=dev)
            for i in range(0, H.shape[0], 32):
                x = H[perm[i:i + 32]]
                xt = x * (torch.rand_like(x) >= level)
                z = torch.sigmoid(xt @ W + b) @ W.t() + c
                loss = torch.nn.functional.binary_cross_entropy_with_logits(z, x, reduction="sum") / x.shape[0]
                opt.zero_grad()
                loss.backward()
                opt.step()
        layers.append((W, b))
        with torch.no_grad():
            H = torch.sigmoid(H @ W + b)
    sync()
    t1 = time.perf_counter()
    Wo = torch.zeros(sizes[-1], 10, device=dev, requires_grad=True)
    bo = torch.zeros(10, device=dev, requires_grad=True)
    opt = torch.optim.SGD([p for l in layers for p in l] + [Wo, bo], lr=0.1)

    def forward(x):
        for W, b in layers:
            x = torch.sigmoid(x @ W + b)
        return x @ Wo + bo

    for _ in range(a.finetune):
        perm = torch.randperm(Xtr.shape[0], device=dev)
        for i in range(0, Xtr.shape[0], 32):
            j = perm[i:i + 32]
            loss = torch.nn.functional.cross_entropy(forward(Xtr[j]), ytr[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
    sync()
    t2 = time.perf_counter()
    with torch.no_grad():
        acc = (forward(Xte).argmax(1) == yte).float().mean().item()
    print(json.dumps({"pretrain_s": t1 - t0, "finetune_s": t2 - t1, "accuracy": acc}))


if __name__ == "__main__":
    main()
