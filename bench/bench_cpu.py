"""CPU benchmark: dae against the project's own PyTorch peers, same data, same run, alternating.

Workloads (Fashion-MNIST, 60,000 training rows; 784→500, tied, sigmoid/sigmoid, cross-entropy,
masking 0.3, plain SGD lr 0.1; one epoch = 5 products of 60000×784×500 = 235 GFLOP):
- training at each batch size: median seconds per epoch (the first epoch of each run is
  dropped as warm-up), effective GFLOP/s, and peak resident memory of the whole process;
- encode: the hidden code of all 70,000 images (train + test), forward pass only;
- score: each of those images' loss (the anomaly score of `dae score`): code, reconstruction and
  cross-entropy, two products per row.

Run through scripts/bench-cpu.sh, which builds dae first.

    python3 bench/bench_cpu.py [--reps 3] [--epochs 3] [--batches 128,20] [--threads 2]

`--batches ""` runs the encode and score rows alone.
"""
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAE = os.path.join(ROOT, "target", "release", "dae")
ENCODE = os.path.join(ROOT, "target", "release", "encode_bench")
PEERS = os.path.join(ROOT, "bench", "peers")
GFLOP_PER_EPOCH = 5 * 2 * 60000 * 784 * 500 / 1e9


def child(cmd):
    """Runs cmd; returns (stdout text, peak resident MB). The peak is the process's own high-water
    mark (VmHWM), polled while it runs: rusage would also count the memory of this Python
    process, which the child inherits until it execs."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = []
    reader = threading.Thread(target=lambda: out.append(p.stdout.read()))
    reader.start()
    peak_kb = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    reader.join()
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr.read()}")
    return out[0], peak_kb / 1024.0


def dae_train(data, batch, epochs, threads, tmp):
    model = os.path.join(tmp, "bench.safetensors")
    _, peak = child([DAE, "train", f"{data}/train-images-idx3-ubyte.gz", "-o", model, "--hidden", "500",
                     "--noise", "masking:0.3", "--loss", "cross-entropy", "--optimizer", "sgd", "--lr", "0.1",
                     "--batch", str(batch), "--epochs", str(epochs), "--threads", str(threads), "--device", "cpu", "--quiet"])
    out, _ = child([DAE, "inspect", model, "--json"])
    secs = [r["seconds"] for r in json.loads(out)["history"]]
    return statistics.median(secs[1:] or secs), peak


def torch_train(data, batch, epochs, threads, mode):
    out, peak = child([sys.executable, os.path.join(PEERS, "torch_dae.py"), data, str(batch), "--epochs", str(epochs),
                       "--threads", str(threads), "--mode", mode])
    secs = [json.loads(l)["seconds"] for l in out.splitlines() if l.startswith("{")]
    return statistics.median(secs[1:] or secs), peak


def machine(threads):
    model = "?"
    flags = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = ", ".join(f for f in ["avx2", "fma", "avx512f", "avx512_bf16"] if f in flags)
    import torch
    return (f"{model}, {os.cpu_count()} cores ({simd}), {threads} threads; Python {platform.python_version()}, "
            f"PyTorch {torch.__version__}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batches", default="128,20")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--torch-modes", default="eager")
    ap.add_argument("--data", default=os.environ.get("DAE_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
    a = ap.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("PyTorch is not installed: run scripts/bench-cpu.sh --install-torch")
    print(f"Machine: {machine(a.threads)}")
    print(f"Each figure is the median over {a.reps} alternating runs (dae, PyTorch, PyTorch, dae, …) of "
          f"the median epoch time of each run, first epoch dropped.\n")
    print("| workload | dae | PyTorch | dae speed-up | dae GFLOP/s | PyTorch GFLOP/s | dae peak RSS | PyTorch peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    modes = a.torch_modes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in [int(b) for b in a.batches.split(",") if b]:
            ours, theirs = {"t": [], "m": []}, {m: {"t": [], "m": []} for m in modes}
            for rep in range(a.reps):
                jobs = [("dae", None)] + [("torch", m) for m in modes]
                if rep % 2:
                    jobs.reverse()
                for who, mode in jobs:
                    if who == "dae":
                        t, m = dae_train(a.data, batch, a.epochs, a.threads, tmp)
                        ours["t"].append(t); ours["m"].append(m)
                    else:
                        t, m = torch_train(a.data, batch, a.epochs, a.threads, mode)
                        theirs[mode]["t"].append(t); theirs[mode]["m"].append(m)
            ot, om = statistics.median(ours["t"]), max(ours["m"])
            best = min(modes, key=lambda m: statistics.median(theirs[m]["t"]))
            tt, tm = statistics.median(theirs[best]["t"]), max(theirs[best]["m"])
            print(f"| train, batch {batch} (s/epoch; PyTorch {best}) | {ot:.2f} s | {tt:.2f} s | {tt / ot:.2f}× | "
                  f"{GFLOP_PER_EPOCH / ot:.0f} | {GFLOP_PER_EPOCH / tt:.0f} | {om:.0f} MB | {tm:.0f} MB |", flush=True)
        for what, flag, products in [("encode", [], 1), ("score", ["--score"], 2)]:
            ours, theirs = [], []
            for rep in range(a.reps):
                pair = ["dae", "torch"] if rep % 2 == 0 else ["torch", "dae"]
                for who in pair:
                    if who == "dae":
                        out, _ = child([ENCODE, a.data, str(a.threads)] + flag)
                        ours.append(json.loads(out)["seconds"])
                    else:
                        out, _ = child([sys.executable, os.path.join(PEERS, "torch_encode.py"), a.data, "--threads", str(a.threads)] + flag)
                        theirs.append(json.loads(out)["seconds"])
            ot, tt = statistics.median(ours), statistics.median(theirs)
            gflop = products * 2 * 70000 * 784 * 500 / 1e9
            print(f"| {what} 70,000 rows (s) | {ot:.3f} s | {tt:.3f} s | {tt / ot:.2f}× | {gflop / ot:.0f} | {gflop / tt:.0f} | | |", flush=True)


if __name__ == "__main__":
    main()
