"""The floor under a DAE step on this GPU: the GPU time of each of its matrix products alone, as
cuBLAS runs them for PyTorch, replayed from a CUDA graph (no launch gaps), in fp32 and TF32.

Shapes of the benchmark's tied 784→500 step at batch n: the encoder's x̃·W (n×784 by 784×500),
the decoder's h·Wᵀ (n×500 by 500×784), the backward ∂z·W (n×784 by 784×500), and W's gradient
x̃ᵀ·∂a + ∂zᵀ·h (two products of depth n, or one of depth 2n when the operands are stacked).
Then the GPU time of an elementwise kernel with next to no work, in a graph after another, and
what a boundary between two graph launches costs the GPU: the same kernels as 100 launches of a
graph of 8 (a batch-20 step's size) against one graph of all 800, both queued behind a busy
GPU so that the host's launching does not show.

    python3 bench/gemm_floor.py [--batches 20,128,1024]
"""
import argparse

import torch


def gpu_us(fn, reps=200):
    """Microseconds of GPU time per call of fn, replayed from one CUDA graph of `reps` calls."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    g.replay()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        best = min(best, a.elapsed_time(b) * 1000 / reps)
    return best


def launch_gap_us(fn, per_graph=8, launches=100):
    """GPU microseconds between graph launches: `launches` replays of a graph of `per_graph`
    calls of fn against one graph of all of them, each queued behind a sleeping kernel (so the
    host's launches are all queued before the GPU reaches them), per launch."""
    def graph(calls):
        g = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fn()
        torch.cuda.current_stream().wait_stream(s)
        with torch.cuda.graph(g):
            for _ in range(calls):
                fn()
        g.replay()
        torch.cuda.synchronize()
        return g

    def timed(g, replays):
        best = float("inf")
        for _ in range(3):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda._sleep(50_000_000)  # tens of milliseconds of GPU time
            a.record()
            for _ in range(replays):
                g.replay()
            b.record()
            torch.cuda.synchronize()
            best = min(best, a.elapsed_time(b) * 1000)
        return best

    split, whole = timed(graph(per_graph), launches), timed(graph(per_graph * launches), 1)
    return split / launches, whole / launches


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="20,128,1024")
    a = ap.parse_args()
    d, k = 784, 500
    print(f"GPU: {torch.cuda.get_device_name(0)}; PyTorch {torch.__version__}")
    print("| batch | precision | x̃·W | h·Wᵀ | ∂z·W | x̃ᵀ·∂a + ∂zᵀ·h (2 products) | the same stacked (1 product) | step's products | × steps an epoch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for n in map(int, a.batches.split(",")):
            g = torch.Generator(device="cuda").manual_seed(1)
            r = lambda *s: torch.rand(*s, device="cuda", generator=g)
            x, w, h, dz, da = r(n, d), r(d, k), r(n, k), r(n, d), r(n, k)
            xs, ds = r(2 * n, d), r(2 * n, k)
            o1, o2, o3, gw = torch.empty(n, k, device="cuda"), torch.empty(n, d, device="cuda"), torch.empty(n, k, device="cuda"), torch.empty(d, k, device="cuda")
            t1 = gpu_us(lambda: torch.mm(x, w, out=o1))
            t2 = gpu_us(lambda: torch.mm(h, w.t(), out=o2))
            t3 = gpu_us(lambda: torch.mm(dz, w, out=o3))
            t4 = gpu_us(lambda: (torch.mm(x.t(), da, out=gw), gw.addmm_(dz.t(), h)))
            t5 = gpu_us(lambda: torch.mm(xs.t(), ds, out=gw))
            step = t1 + t2 + t3 + min(t4, t5)
            steps = -(-60000 // n)
            print(f"| {n} | {'TF32' if tf32 else 'fp32'} | {t1:.1f} µs | {t2:.1f} µs | {t3:.1f} µs | {t4:.1f} µs | {t5:.1f} µs | "
                  f"{step:.1f} µs | {step * steps / 1000:.2f} ms |", flush=True)
    # What a kernel with next to no work costs in a graph, after another (the step's fused
    # elementwise kernels are about this small at batch 20).
    print()
    for n in map(int, a.batches.split(",")):
        x = torch.zeros(n, d, device="cuda")
        print(f"An elementwise kernel over {n}×{d} values (in-place add), one after another in a graph: "
              f"{gpu_us(lambda: x.add_(1.0)):.1f} µs each", flush=True)
    x = torch.zeros(20, d, device="cuda")
    try:
        split, whole = launch_gap_us(lambda: x.add_(1.0))
    except (AttributeError, RuntimeError) as e:  # torch.cuda._sleep is PyTorch's own, not public
        print(f"(the launch boundary was not measured: {e})")
        return
    print(f"8 such kernels (20×{d}) a graph: {split:.1f} µs a launch, launched 100 times in a row; "
          f"{whole:.1f} µs for the same 8 inside one graph of 800: a launch boundary costs the GPU "
          f"{split - whole:.1f} µs", flush=True)


if __name__ == "__main__":
    main()
