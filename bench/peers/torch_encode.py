"""PyTorch peer for the encode benchmark: h = sigmoid(x·W + b) for every Fashion-MNIST image
(60,000 train + 10,000 test rows, pixels / 255), in chunks of CHUNK rows, no gradients.
The weights are random (the time does not depend on them). Prints {"seconds": …} for the
forward passes alone (reading the data excluded).

    python3 bench/peers/torch_encode.py DATA_DIR [--hidden 500] [--threads 2] [--chunk 1024] [--device cpu|cuda] [--score]

With --score, each row's loss instead (`dae score`): the reconstruction sigmoid(h·Wᵀ + c) of the
code h, and the cross-entropy between it and the image summed over the pixels, from the logits.

On cuda the images are already on the GPU and the codes stay there: the time is the computation.
"""
import argparse, json, math, time, sys, os
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from torch_dae import idx_images


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--hidden", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--score", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.device != "cpu":
        torch.set_default_device(a.device)
    sync = torch.cuda.synchronize if a.device != "cpu" else (lambda: None)
    X = np.concatenate([idx_images(f"{a.data}/train-images-idx3-ubyte.gz"), idx_images(f"{a.data}/t10k-images-idx3-ubyte.gz")])
    X = torch.tensor(X.astype(np.float32) / 255.0)
    d, k = X.shape[1], a.hidden
    W = (torch.rand(d, k) * 2 - 1) * (4 * math.sqrt(6 / (d + k)))
    b = torch.zeros(k)
    c = torch.zeros(d)
    out = torch.empty(X.shape[0]) if a.score else torch.empty(X.shape[0], k)
    with torch.no_grad():
        for _ in range(2):  # warm-up, then the timed pass
            sync()
            t = time.perf_counter()
            for i in range(0, X.shape[0], a.chunk):
                x = X[i:i + a.chunk]
                h = torch.sigmoid(x @ W + b)
                if a.score:
                    logits = h @ W.T + c
                    out[i:i + a.chunk] = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
                else:
                    out[i:i + a.chunk] = h
            sync()
            dt = time.perf_counter() - t
    print(json.dumps({"seconds": dt, "rows": X.shape[0]}))


if __name__ == "__main__":
    main()
