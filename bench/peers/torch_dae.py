"""PyTorch peer for the CPU benchmark: the same denoising autoencoder as `dae train`.

784→HIDDEN, tied weights, sigmoid encoder and decoder (cross-entropy on the logits), masking
noise 0.3, plain SGD lr 0.1, every training row each epoch (the last batch may be shorter, as in
dae). The step is the reference's (../shared/reference/torch_dae.py): the loss of the last
batch is kept, not summed, so that nothing but the training is timed. Prints one JSON object per
epoch: {"epoch", "seconds", "loss"} (the last batch's loss).

    python3 bench/peers/torch_dae.py DATA_DIR BATCH [--epochs 3] [--hidden 500] [--threads 2]
                                     [--mode eager|compile|graphs] [--device cpu|cuda]

On cuda the data sit on the GPU and each epoch ends with a synchronisation; `graphs` is
torch.compile's mode="reduce-overhead" (CUDA graphs).
"""
import argparse, gzip, json, math, struct, time
import numpy as np
import torch


def idx_images(path):
    with gzip.open(path) as f:
        data = f.read()
    magic, n, r, c = struct.unpack(">IIII", data[:16])
    assert magic == 2051, path
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, r * c)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("batch", type=int)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", default="eager", choices=["eager", "compile", "graphs"])
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    if a.device != "cpu":
        torch.set_default_device(a.device)
    X = torch.tensor(idx_images(f"{a.data}/train-images-idx3-ubyte.gz").astype(np.float32) / 255.0)
    n, d = X.shape
    k = a.hidden
    W = ((torch.rand(d, k) * 2 - 1) * (4 * math.sqrt(6 / (d + k)))).requires_grad_()
    b = torch.zeros(k, requires_grad=True)
    c = torch.zeros(d, requires_grad=True)
    opt = torch.optim.SGD([W, b, c], lr=0.1)

    def step(x):
        xt = x * (torch.rand_like(x) >= 0.3)
        z = torch.sigmoid(xt @ W + b) @ W.t() + c
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, x, reduction="sum") / x.shape[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    if a.mode == "compile":
        step = torch.compile(step)
    elif a.mode == "graphs":
        step = torch.compile(step, mode="reduce-overhead")
    sync = torch.cuda.synchronize if a.device != "cpu" else (lambda: None)
    for ep in range(1, a.epochs + 1):
        t = time.perf_counter()
        perm = torch.randperm(n)
        for i in range(0, n, a.batch):
            loss = step(X[perm[i:i + a.batch]])
        sync()
        dt = time.perf_counter() - t
        print(json.dumps({"epoch": ep, "seconds": dt, "loss": float(loss)}), flush=True)


if __name__ == "__main__":
    main()
