#!/usr/bin/env bash
# The Theano dA tutorial's recipe on Fashion-MNIST, run by dae, beside the PyTorch reference.
#
#   scripts/quality-dae.sh            # needs: apt-get install dataset-fashion-mnist
#
# Recipe: 784→500, tied, sigmoid/sigmoid, cross-entropy, masking 0.3, SGD lr 0.1, batch 20,
# 15 epochs, all 60,000 training images. Prints the last epoch's mean training loss and the test
# loss (10,000 test images) under masking 0.3 and on clean inputs, beside PyTorch's
# (../shared/reference/REFERENCE.md, `torch_sda.py da`), and the relative difference.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DAE_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
SEED=${SEED:-1}
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || { echo "Fashion-MNIST not found in $DATA (apt-get install dataset-fashion-mnist)" >&2; exit 2; }
cargo build --release -q -p dae-cli
DAE=target/release/dae
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

start=$(date +%s%N)
$DAE train "$DATA/train-images-idx3-ubyte.gz" -o "$WORK/da.safetensors" --hidden 500 \
    --noise masking:0.3 --loss cross-entropy --encoder sigmoid --decoder sigmoid \
    --optimizer sgd --lr 0.1 --batch 20 --epochs 15 --seed "$SEED" --quiet
seconds=$(( ($(date +%s%N) - start) / 1000000 ))
train=$($DAE inspect "$WORK/da.safetensors" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["history"][-1]["train_loss"])')
mean_score() { $DAE score "$WORK/da.safetensors" "$DATA/t10k-images-idx3-ubyte.gz" -o "$WORK/s.npy" "$@" 2>&1 | sed -n 's/.*mean \([0-9.]*\).*/\1/p'; }
masked=$(mean_score --noise masking:0.3 --seed 1)
clean=$(mean_score)

python3 - "$train" "$masked" "$clean" "$seconds" "$(nproc)" <<'PY'
import sys
ours = [float(v) for v in sys.argv[1:4]]
seconds, cores = float(sys.argv[4]) / 1000, sys.argv[5]
# PyTorch, same recipe, 2-core CPU: ../shared/reference/REFERENCE.md.
ref = [210.29, 212.23, 238.87]
rows = ["final-epoch mean training loss", "test loss, inputs masked at 0.3", "test loss, clean inputs"]
print(f"| quantity (cross-entropy per image) | dae | PyTorch reference | difference |")
print(f"|---|---|---|---|")
for name, o, r in zip(rows, ours, ref):
    print(f"| {name} | {o:.2f} | {r:.2f} | {100*(o-r)/r:+.2f} % |")
print(f"| wall time of the 15 epochs ({cores} cores) | {seconds:.0f} s | 53 s | |")
bad = [n for n, o, r in zip(rows[:2], ours, ref) if abs(o - r) / r > 0.015]
print("\nwithin 1.5 % of the reference on both targets" if not bad else f"\nOUTSIDE 1.5 %: {bad}")
sys.exit(1 if bad else 0)
PY
