"""CSV benchmark: encode a CSV file of features into a CSV file of codes, end to end, dae against
what a user would otherwise write (bench/peers/pandas_encode.py: pandas reads, PyTorch computes,
numpy writes), same model, same files, same run, alternating.

The features are every Fashion-MNIST image (60,000 + 10,000 rows × 784 pixels / 255, written
with 6 significant digits, about 300 MB of text); the model is a 784→500 sigmoid autoencoder
(trained here for one epoch on the test images: the time does not depend on the weights).
dae's figure is the whole `dae encode MODEL features.csv -o codes.csv` process; the peer's is
its reading, computing and writing (starting Python and importing pandas and PyTorch are not
counted). Both outputs are read back and compared.

    python3 bench/bench_csv.py [--reps 3] [--threads 2]

Needs pandas, PyTorch and safetensors (pip install pandas torch safetensors).
"""
import argparse, gzip, json, os, statistics, subprocess, sys, tempfile, time
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAE = os.path.join(ROOT, "target", "release", "dae")
PEER = os.path.join(ROOT, "bench", "peers", "pandas_encode.py")


def idx_images(path):
    with gzip.open(path) as f:
        raw = f.read()
    n, h, w = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, h * w)


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=os.environ.get("DAE_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
    a = ap.parse_args()
    import pandas as pd
    with tempfile.TemporaryDirectory() as tmp:
        X = np.concatenate([idx_images(f"{a.data}/train-images-idx3-ubyte.gz"), idx_images(f"{a.data}/t10k-images-idx3-ubyte.gz")])
        features = os.path.join(tmp, "features.csv")
        pd.DataFrame(X.astype(np.float32) / 255).to_csv(features, header=False, index=False, float_format="%.6g")
        model = os.path.join(tmp, "model.safetensors")
        run([DAE, "train", f"{a.data}/t10k-images-idx3-ubyte.gz", "-o", model, "--hidden", "500", "--epochs", "1",
             "--threads", str(a.threads), "--quiet"])
        print(f"features: {X.shape[0]} rows × {X.shape[1]} columns, {os.path.getsize(features) / 1e6:.0f} MB of CSV; "
              f"pandas {pd.__version__}; {a.threads} threads")
        ours, theirs, parts = [], [], []
        ours_out, theirs_out = os.path.join(tmp, "dae.csv"), os.path.join(tmp, "peer.csv")
        for rep in range(a.reps):
            for who in (["dae", "peer"] if rep % 2 == 0 else ["peer", "dae"]):
                if who == "dae":
                    t = time.perf_counter()
                    run([DAE, "encode", model, features, "-o", ours_out, "--threads", str(a.threads), "--quiet"])
                    ours.append(time.perf_counter() - t)
                else:
                    r = json.loads(run([sys.executable, PEER, model, features, theirs_out, "--threads", str(a.threads)]))
                    theirs.append(r["seconds"])
                    parts.append(r)
        a_codes = pd.read_csv(ours_out, header=None, dtype=np.float32).to_numpy()
        b_codes = pd.read_csv(theirs_out, header=None, dtype=np.float32).to_numpy()
        diff = float(np.abs(a_codes - b_codes).max())
        sizes = os.path.getsize(ours_out) / 1e6, os.path.getsize(theirs_out) / 1e6
    ot, tt = statistics.median(ours), statistics.median(theirs)
    med = lambda k: statistics.median(p[k] for p in parts)
    print(f"Each figure is the median of {a.reps} alternating runs.\n")
    print("| workload | dae | pandas + PyTorch + numpy | dae speed-up |")
    print("|---|---|---|---|")
    print(f"| encode a 70,000-row CSV into a CSV (s) | {ot:.2f} s | {tt:.2f} s | {tt / ot:.2f}× |")
    print(f"\nThe peer's steps: read {med('read'):.2f} s, compute {med('compute'):.2f} s, write {med('write'):.2f} s. "
          f"Outputs: dae {sizes[0]:.0f} MB, peer {sizes[1]:.0f} MB; largest difference between their codes {diff:.1e}.")


if __name__ == "__main__":
    main()
