"""Peer for the CSV benchmark: what a user without dae writes to turn a CSV of features into a
CSV of codes. pandas reads the CSV (its C parser, float32), PyTorch computes
h = sigmoid(x·W + b) with the weights of a dae model file, numpy.savetxt writes the codes with 9
significant digits (enough to read every float32 back exactly; of the ways tried it was the
fastest: pandas' to_csv took 3.8× as long by default and 5.8× with float_format="%.9g").
Prints {"seconds": …, "read": …, "compute": …, "write": …}: the three steps, timed inside the
process (starting Python and importing pandas and PyTorch are not counted).

    python3 bench/peers/pandas_encode.py MODEL.safetensors DATA.csv OUT.csv [--threads 2] [--chunk 1024]
"""
import argparse, json, time
import numpy as np
import pandas as pd
import torch
from safetensors.numpy import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=1024)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t = load_file(a.model)
    W, b = torch.from_numpy(t["W"]), torch.from_numpy(t["b"])
    t0 = time.perf_counter()
    X = torch.from_numpy(pd.read_csv(a.data, header=None, dtype=np.float32, engine="c").to_numpy())
    t1 = time.perf_counter()
    out = torch.empty(X.shape[0], W.shape[1])
    with torch.no_grad():
        for i in range(0, X.shape[0], a.chunk):
            out[i:i + a.chunk] = torch.sigmoid(X[i:i + a.chunk] @ W + b)
    t2 = time.perf_counter()
    np.savetxt(a.out, out.numpy(), fmt="%.9g", delimiter=",")
    t3 = time.perf_counter()
    print(json.dumps({"seconds": t3 - t0, "read": t1 - t0, "compute": t2 - t1, "write": t3 - t2, "rows": X.shape[0]}))


if __name__ == "__main__":
    main()
