"""GPU benchmark: dae's CUDA engine against the project's PyTorch peers on the same GPU, same run,
alternating (dae, PyTorch, PyTorch, dae, …).

Workload as in bench_cpu.py (Fashion-MNIST, 60,000 rows; 784→500, tied, sigmoid/sigmoid,
cross-entropy, masking 0.3, plain SGD lr 0.1), seconds per epoch of the whole real step (noise,
loss, gradients, update), the median over a run's epochs after the first, then the median over
runs. dae runs as `dae train --device cuda` (8 steps a CUDA graph; W's update from batches of
at most 32 rows by dae's own kernel; "launches" is the same with DAE_CUDA_GRAPHS=0, "unfused"
with DAE_CUDA_FUSE=0, "1 step a graph" with DAE_CUDA_STEPS=1, "cuBLAS's W update" with
DAE_CUDA_UPDATE=0, "tuned products" with DAE_CUDA_TUNE=1); PyTorch runs
bench/peers/torch_dae.py --device cuda. Also: the loss of a GPU epoch beside the CPU engine's
(same seed: the same noise and order), TF32's final training loss beside fp32's (its accuracy),
and encoding all 70,000 images. With --baseline, another build of dae (scripts/gpu-check.sh
prepare --baseline REV makes one) is timed beside this one on the training rows, alternating,
and both are printed with the ratio.

Run through scripts/gpu-check.sh.

    python3 bench/bench_gpu.py [--reps 2] [--epochs 5] [--batches 20,128,1024] [--torch-graphs] [--baseline DAE]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cpu import DAE, ENCODE, PEERS, GFLOP_PER_EPOCH, child  # noqa: E402


def dae_epochs(data, batch, epochs, tmp, extra=(), env=None, device="cuda", binary=DAE):
    model = os.path.join(tmp, "bench.safetensors")
    cmd = [binary, "train", f"{data}/train-images-idx3-ubyte.gz", "-o", model, "--hidden", "500", "--noise", "masking:0.3",
           "--loss", "cross-entropy", "--optimizer", "sgd", "--lr", "0.1", "--batch", str(batch), "--epochs", str(epochs),
           "--device", device, "--quiet", *extra]
    full_env = dict(os.environ, **(env or {}))
    p = subprocess.run(cmd, capture_output=True, text=True, env=full_env)
    if p.returncode != 0:
        raise RuntimeError(f"failed: {' '.join(cmd)} (env {env})\n{p.stderr}")
    out, _ = child([binary, "inspect", model, "--json"])
    return json.loads(out)["history"]


def dae_time(data, batch, epochs, tmp, extra=(), env=None, binary=DAE):
    """The median epoch time after the first, and the last epoch's training loss."""
    history = dae_epochs(data, batch, epochs, tmp, extra, env, binary=binary)
    secs = [r["seconds"] for r in history]
    return statistics.median(secs[1:] or secs), history[-1]["train_loss"]


def torch_time(data, batch, epochs, mode):
    out, _ = child([sys.executable, os.path.join(PEERS, "torch_dae.py"), data, str(batch), "--epochs", str(epochs),
                    "--mode", mode, "--device", "cuda"])
    secs = [json.loads(l)["seconds"] for l in out.splitlines() if l.startswith("{")]
    return statistics.median(secs[1:] or secs)


def fmt(s):
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--torch-epochs", type=int, default=3)
    ap.add_argument("--batches", default="20,128,1024")
    ap.add_argument("--torch-graphs", action="store_true", help="also torch.compile(mode='reduce-overhead') at batch 128")
    ap.add_argument("--baseline", metavar="DAE", help="another dae binary to time beside this build (training rows)")
    ap.add_argument("--data", default=os.environ.get("DAE_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
    a = ap.parse_args()
    import torch
    print(f"GPU: {torch.cuda.get_device_name(0)}; PyTorch {torch.__version__}, CUDA {torch.version.cuda}")
    print(f"Each figure is the median over {a.reps} alternating runs of the median epoch time of each run "
          f"(first epoch dropped).\n")
    print("| workload | dae | PyTorch | dae speed-up | dae GFLOP/s | PyTorch GFLOP/s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [(f"train, batch {b}, fp32", int(b), (), None, "eager") for b in a.batches.split(",")]
        # Variants of dae beside the same PyTorch figure (mode None: not rerun).
        rows.append(("train, batch 128, fp32, launches (no graphs)", 128, (), {"DAE_CUDA_GRAPHS": "0"}, None))
        rows.append(("train, batch 128, fp32, unfused kernels", 128, (), {"DAE_CUDA_FUSE": "0"}, None))
        rows.append(("train, batch 128, TF32 products", 128, ("--precision", "tf32"), None, None))
        # W's update by cuBLAS (DAE_CUDA_UPDATE=0) where dae's kernel takes it (at most 32 rows),
        # and one step a graph (DAE_CUDA_STEPS=1).
        rows.append(("train, batch 20, fp32, cuBLAS's W update", 20, (), {"DAE_CUDA_UPDATE": "0"}, None))
        rows.append(("train, batch 20, fp32, 1 step a graph", 20, (), {"DAE_CUDA_STEPS": "1"}, None))
        rows.append(("train, batch 20, fp32, cuBLAS's W update, 1 step a graph", 20, (), {"DAE_CUDA_UPDATE": "0", "DAE_CUDA_STEPS": "1"}, None))
        rows.append(("train, batch 32, fp32", 32, (), None, None))
        rows.append(("train, batch 32, fp32, cuBLAS's W update", 32, (), {"DAE_CUDA_UPDATE": "0"}, None))
        rows.append(("train, batch 128, fp32, 1 step a graph", 128, (), {"DAE_CUDA_STEPS": "1"}, None))
        # Products tuned at start-up (DAE_CUDA_TUNE=1: cublasSgemm or cuBLASLt's fastest algorithm).
        rows.append(("train, batch 128, fp32, tuned products", 128, (), {"DAE_CUDA_TUNE": "1"}, None))
        if a.torch_graphs:
            rows.append(("train, batch 128, fp32 (PyTorch CUDA graphs)", 128, (), None, "graphs"))
        eager, final_loss, failures = {}, {}, []
        for label, batch, extra, env, mode in rows:
            shared = mode is None and batch in eager
            mode = mode or "eager"
            ours, theirs = [], []
            for rep in range(a.reps):
                order = ["dae", "torch"] if rep % 2 == 0 else ["torch", "dae"]
                for who in order:
                    if who == "dae":
                        try:
                            secs, loss = dae_time(a.data, batch, a.epochs, tmp, extra, env)
                        except RuntimeError as e:
                            # One variant failing does not stop the others; the run fails at the end.
                            print(e, file=sys.stderr)
                            failures.append(label)
                            break
                        ours.append(secs)
                        final_loss[label] = loss
                    elif not shared:
                        theirs.append(torch_time(a.data, batch, a.torch_epochs, mode))
                if label in failures:
                    break
            if label in failures:
                print(f"| {label} | failed | | | | |", flush=True)
                continue
            o = statistics.median(ours)
            t = eager[batch] if shared else statistics.median(theirs)
            if mode == "eager" and not extra and env is None:
                eager[batch] = t
            note = f"PyTorch {mode}" + (f" of the batch {batch} row" if shared else "")
            print(f"| {label} (s/epoch; {note}) | {fmt(o)} | {fmt(t)} | {t / o:.1f}× | {GFLOP_PER_EPOCH / o:.0f} | "
                  f"{GFLOP_PER_EPOCH / t:.0f} |", flush=True)
        ours, theirs, full, streamed = [], [], [], []
        for rep in range(a.reps):
            for who in (["dae", "torch"] if rep % 2 == 0 else ["torch", "dae"]):
                if who == "dae":
                    r = json.loads(child([ENCODE, a.data, "cuda"])[0])
                    ours.append(r["gpu_seconds"]); full.append(r["seconds"]); streamed.append(r["streamed_seconds"])
                else:
                    out, _ = child([sys.executable, os.path.join(PEERS, "torch_encode.py"), a.data, "--device", "cuda", "--chunk", "16384"])
                    theirs.append(json.loads(out)["seconds"])
        o, t = statistics.median(ours), statistics.median(theirs)
        gflop = 2 * 70000 * 784 * 500 / 1e9
        print(f"| encode 70,000 rows, GPU time (data on the GPU) | {fmt(o)} | {fmt(t)} | {t / o:.1f}× | {gflop / o:.0f} | {gflop / t:.0f} |")
        print(f"| encode 70,000 rows, with copies to and from the GPU | {fmt(statistics.median(full))} | | | | |")
        print(f"| encode 70,000 rows, with copies, codes handed on chunk by chunk (as `dae encode`) | {fmt(statistics.median(streamed))} | | | | |")
        print()
        # Batches of 20 take dae's weight-update kernel on the GPU: the same loss as the CPU's.
        for batch in (128, 20):
            try:
                gpu = dae_epochs(a.data, batch, 1, tmp)[0]["train_loss"]
                cpu = dae_epochs(a.data, batch, 1, tmp, device="cpu")[0]["train_loss"]
                print(f"Loss after one epoch at batch {batch} (same seed): GPU {gpu:.4f}, CPU engine {cpu:.4f}, "
                      f"difference {100 * abs(gpu - cpu) / cpu:.4f} %")
            except RuntimeError as e:
                print(e, file=sys.stderr)
                failures.append(f"loss after one epoch at batch {batch}, GPU and CPU")
        fp32, tf32 = final_loss.get("train, batch 128, fp32"), final_loss.get("train, batch 128, TF32 products")
        if fp32 is not None and tf32 is not None:
            print(f"TF32's accuracy: training loss after {a.epochs} epochs at batch 128 (same seed), fp32 {fp32!r}, "
                  f"TF32 {tf32!r}, relative difference {abs(tf32 - fp32) / fp32:.2e}")
        if a.baseline:
            compare_builds(a, tmp, failures)
        if failures:
            sys.exit(f"failed: {', '.join(failures)}")


def compare_builds(a, tmp, failures):
    """This build beside the baseline build on the training rows, alternating, same run."""
    rev_file = a.baseline + ".rev"
    rev = open(rev_file).read().strip() if os.path.exists(rev_file) else a.baseline
    # At least 3 runs each: the differences sought are near the run-to-run spread (about 2 %).
    reps = max(a.reps, 3)
    print(f"\nThis build beside the baseline build ({rev}); each the median over {reps} alternating runs:\n")
    print("| workload | this build | baseline | this build's speed-up |")
    print("|---|---|---|---|")
    rows = [(f"train, batch {b}, fp32", int(b), ()) for b in a.batches.split(",")]
    rows.append(("train, batch 128, TF32 products", 128, ("--precision", "tf32")))
    for label, batch, extra in rows:
        times = {DAE: [], a.baseline: []}
        try:
            for rep in range(reps):
                for binary in ([DAE, a.baseline] if rep % 2 == 0 else [a.baseline, DAE]):
                    times[binary].append(dae_time(a.data, batch, a.epochs, tmp, extra, binary=binary)[0])
        except RuntimeError as e:
            print(e, file=sys.stderr)
            failures.append(f"{label} (baseline comparison)")
            print(f"| {label} | failed | | |", flush=True)
            continue
        o, b = statistics.median(times[DAE]), statistics.median(times[a.baseline])
        print(f"| {label} (s/epoch) | {fmt(o)} | {fmt(b)} | {b / o:.3f}× |", flush=True)
    print()


if __name__ == "__main__":
    main()
