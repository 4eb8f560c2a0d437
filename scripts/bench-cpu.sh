#!/usr/bin/env bash
# CPU benchmark: dae against the project's PyTorch peers on Fashion-MNIST, same run, alternating.
#
#   scripts/bench-cpu.sh [--install-torch] [bench_cpu.py options: --reps 3 --epochs 3 --batches 128,20]
#
# Needs Fashion-MNIST (apt-get install dataset-fashion-mnist) and PyTorch; --install-torch
# installs PyTorch with pip first. Also prints the matrix-product comparison (gemm_shapes).
# CI does not run this.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--install-torch" ]; then
    shift
    python3 -m pip install -q torch numpy
fi
cargo build --release -q -p dae-cli -p dae-bench
echo "## Matrix products (GFLOP/s)"
echo
target/release/gemm_shapes "${DAE_BENCH_THREADS:-2}"
echo
echo "## Training and encoding"
echo
python3 bench/bench_cpu.py "$@"
