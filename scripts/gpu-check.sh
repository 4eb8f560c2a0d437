#!/usr/bin/env bash
# Every GPU test and the GPU benchmark, prepared on a machine with Rust and run in one go on a
# machine with an NVIDIA GPU (which needs no Rust: only the driver, and PyTorch for the peers).
#
#   scripts/gpu-check.sh prepare [--baseline REV]
#       here: builds the binaries and gathers what the run needs in .gpu/; with --baseline, also
#       builds `dae` as it was at commit REV (.gpu/dae-base), to be timed beside this build
#   scripts/gpu-check.sh run [ARGS]
#       there: the GPU tests, then bench/bench_gpu.py ARGS (with --baseline .gpu/dae-base when
#       prepared), what DAE_CUDA_TUNE chose for each product shape at batch 128, the start-up time with
#       the kernel cache off, empty and filled (and on the CPU), the GPU time of the step's products alone
#       (bench/gemm_floor.py), and kernel profiles from Nsight Systems and Nsight Compute,
#       where installed (with Nsight Compute, also the step's own kernels in detail: launch,
#       occupancy, stall reasons, memory)
#
# The stacked recipe on the GPU: DAE_DEVICE=cuda scripts/quality-sda.sh (and scripts/sda-sweep.sh).
#
# `prepare` puts the test binaries, the golden vectors and Fashion-MNIST in .gpu/ (ignored by git);
# carry .gpu, target/release/dae and target/release/encode_bench to the GPU machine. The CUDA
# libraries are loaded at run time: libcuda from the driver, cuBLAS and NVRTC from the CUDA
# toolkit or pip's nvidia-* wheels (found through ldconfig or LD_LIBRARY_PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
    DATA=${DAE_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
    BASE=
    case "${2:-}" in
    --baseline)
        BASE=$(git rev-parse --verify --quiet "${3:-}^{commit}") || { echo "--baseline: '${3:-}' is not a commit" >&2; exit 2; }
        ;;
    "") ;;
    *)
        echo "usage: scripts/gpu-check.sh prepare [--baseline REV]" >&2
        exit 2
        ;;
    esac
    cargo build --release -q -p dae-cli -p dae-bench
    rm -rf .gpu && mkdir -p .gpu/bin .gpu/golden .gpu/data
    if [ -n "$BASE" ]; then
        # That commit's tree, built in a target directory of its own (kept for the next time).
        src=$(mktemp -d)
        trap 'git worktree remove --force "$src" 2>/dev/null || rm -rf "$src"' EXIT
        git worktree add -q --detach "$src" "$BASE"
        CARGO_TARGET_DIR=$PWD/target/baseline cargo build --release -q --manifest-path "$src/Cargo.toml" -p dae-cli
        cp target/baseline/release/dae .gpu/dae-base && strip .gpu/dae-base
        git log -1 --format='%h %s' "$BASE" | cut -c1-72 | sed 's/ *$//' > .gpu/dae-base.rev
    fi
    for t in cuda golden; do
        bin=$(cargo test -q -p dae --test "$t" --no-run --message-format=json 2>/dev/null \
            | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable"): print(m["executable"])' | tail -1)
        cp "$bin" ".gpu/bin/$t" && strip ".gpu/bin/$t"
    done
    cp "${DAE_GOLDEN_DIR:-../shared/golden}"/*.json .gpu/golden/
    cp "$DATA"/*-ubyte.gz .gpu/data/
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    du -sh .gpu target/release/dae target/release/encode_bench
    [ -z "$BASE" ] || echo "baseline: $(cat .gpu/dae-base.rev)"
    ;;
run)
    nvidia-smi -L || true
    export DAE_GOLDEN_DIR=$PWD/.gpu/golden DAE_FASHION_MNIST=$PWD/.gpu/data DAE_NO_BUILD=1
    echo "## GPU tests"
    # The tests skip their GPU parts when no GPU is usable: here one must be. A failing test
    # does not stop the benchmark (device time is scarce); the script fails at the end.
    failed=0
    DAE_REQUIRE_TUNING=1 .gpu/bin/cuda --test-threads 1 2>&1 | tee /tmp/gpu-tests.log || failed=1
    .gpu/bin/golden --test-threads 1 2>&1 | tee -a /tmp/gpu-tests.log || failed=1
    # The golden vectors again with tuned products (DAE_CUDA_TUNE=1: cuBLASLt's algorithms).
    echo "golden vectors with DAE_CUDA_TUNE=1:"
    DAE_CUDA_TUNE=1 .gpu/bin/golden --test-threads 1 2>&1 | tee -a /tmp/gpu-tests.log | tail -3 || failed=1
    if grep -q "skipping the GPU part" /tmp/gpu-tests.log; then
        echo "GPU tests skipped: no usable GPU" >&2
        exit 1
    fi
    echo
    echo "## Benchmark"
    BASELINE=()
    [ ! -x .gpu/dae-base ] || BASELINE=(--baseline .gpu/dae-base)
    python3 bench/bench_gpu.py "${BASELINE[@]}" "${@:2}" || failed=1
    echo
    echo "## Tuned products (DAE_CUDA_TUNE=report): each product shape of one epoch, timed"
    rm -f /tmp/dae-tune.safetensors
    for args in "--batch 128"; do
        echo "### $args"
        # shellcheck disable=SC2086
        if DAE_CUDA_TUNE=report target/release/dae train "$DAE_FASHION_MNIST/train-images-idx3-ubyte.gz" \
            -o /tmp/dae-tune.safetensors --hidden 500 --noise masking:0.3 --loss cross-entropy --optimizer sgd \
            --lr 0.1 --device cuda --quiet --epochs 1 $args >/tmp/dae-tune.log 2>&1; then
            grep -E '^(tuned|tuning) cuBLAS' /tmp/dae-tune.log || { echo "(no tuning lines)"; failed=1; }
        else
            echo "failed:"; tail -5 /tmp/dae-tune.log; failed=1
        fi
    done
    echo
    echo "## Start-up: a GPU encode of 10,000 rows, the kernels compiled or read from the cache"
    rm -rf /tmp/dae-kcache
    [ -f /tmp/dae-tune.safetensors ] || { echo "(no model: every tuning run failed)"; failed=1; }
    [ ! -f /tmp/dae-tune.safetensors ] || for run in off cold warm; do
        dir=/tmp/dae-kcache
        [ "$run" != off ] || dir=
        t0=$(date +%s.%N)
        DAE_CACHE_DIR=$dir target/release/dae encode /tmp/dae-tune.safetensors \
            "$DAE_FASHION_MNIST/t10k-images-idx3-ubyte.gz" -o /tmp/dae-codes.npy --device cuda --quiet || failed=1
        t1=$(date +%s.%N)
        echo "cache $run: $(python3 -c "print(f'{$t1 - $t0:.2f}')") s"
    done
    ls /tmp/dae-kcache || failed=1
    # The same command on the CPU: what of the start-up is not the GPU's.
    if [ -f /tmp/dae-tune.safetensors ]; then
        t0=$(date +%s.%N)
        target/release/dae encode /tmp/dae-tune.safetensors "$DAE_FASHION_MNIST/t10k-images-idx3-ubyte.gz" \
            -o /tmp/dae-codes.npy --device cpu --quiet || failed=1
        t1=$(date +%s.%N)
        echo "on the CPU: $(python3 -c "print(f'{$t1 - $t0:.2f}')") s"
    fi
    echo
    echo "## The step's matrix products alone (cuBLAS through PyTorch, GPU time from a CUDA graph)"
    python3 bench/gemm_floor.py || failed=1
    # Where a step's time goes, kernel by kernel, from Nsight Systems when it is installed.
    NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys 2>/dev/null || true)
    NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)
    echo
    echo "Profilers here: nsys ${NSYS:-none}, ncu ${NCU:-none}"
    # The benchmark's training run, less its batch and epochs, for the profilers to launch.
    TRAIN=(target/release/dae train "$DAE_FASHION_MNIST/train-images-idx3-ubyte.gz" -o /tmp/dae-prof.safetensors
        --hidden 500 --noise masking:0.3 --loss cross-entropy --optimizer sgd --lr 0.1 --device cuda --quiet)
    if [ -n "$NSYS" ]; then
        for b in 20 128; do
            echo
            echo "## GPU kernels of 2 epochs at batch $b (nsys)"
            # Steps replay as CUDA graphs: trace the graphs' nodes, not whole graphs.
            "$NSYS" profile --cuda-graph-trace=node -o /tmp/dae-prof --force-overwrite true "${TRAIN[@]}" --batch "$b" \
                --epochs 2 >/tmp/dae-prof.log 2>&1 || { echo "nsys failed:"; tail -5 /tmp/dae-prof.log; continue; }
            "$NSYS" stats -q --report cuda_gpu_kern_sum --format table /tmp/dae-prof.nsys-rep 2>&1 | head -16 || true
        done
    else
        echo "(no nsys here: no kernel profile)"
    fi
    # Each kernel's own GPU time, from Nsight Compute when it is installed (the H200 machine has
    # it): the kernels of some training steps well past the first (graphs captured by then),
    # each graph node profiled on its own, L2 left warm and clocks as they run. At most 60 s
    # each, so that the whole script stays within 6 minutes.
    if [ -n "$NCU" ]; then
        for b in 20 128; do
            echo
            echo "## GPU time of each kernel of training steps at batch $b (ncu)"
            timeout 60 "$NCU" --graph-profiling node --launch-skip 400 --launch-count 64 --cache-control none \
                --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel "${TRAIN[@]}" \
                --batch "$b" --epochs 1 >/tmp/ncu.log 2>&1 || echo "(ncu ended with status $?)"
            grep -v '^==PROF==' /tmp/ncu.log | tail -80 || true
        done
        # Why the step's own kernels take 2-4 µs where one with next to no work takes 1.2 µs
        # in a graph: their launch, occupancy, stall reasons and memory traffic at batch 20
        # (two launches each, well past the first steps). At most 90 s.
        echo
        echo "## The step's own kernels at batch 20, in detail (ncu)"
        timeout 90 "$NCU" --graph-profiling node --kernel-name regex:'^(gather_corrupt|bias_act|loss_grad|act_grad_col_sums|rank_update)$' \
            --launch-skip 400 --launch-count 10 --cache-control none --clock-control none --section SpeedOfLight \
            --section LaunchStats --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \
            "${TRAIN[@]}" --batch 20 --epochs 1 >/tmp/ncu-detail.log 2>&1 || echo "(ncu ended with status $?)"
        grep -v '^==PROF==' /tmp/ncu-detail.log | grep -v '^ *----' | tail -400 || true
    fi
    echo
    echo "gpu-check run: ${SECONDS} s"
    if [ "$failed" -ne 0 ]; then
        echo "FAILED: a GPU test or the benchmark failed (above)" >&2
        exit 1
    fi
    ;;
*)
    echo "usage: scripts/gpu-check.sh prepare [--baseline REV] | run [ARGS]" >&2
    exit 2
    ;;
esac
