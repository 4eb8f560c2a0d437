#!/usr/bin/env bash
# The stacked-autoencoder recipe end to end (pretraining and fine-tuning; see
# scripts/quality-sda.sh), by dae and by the project's PyTorch peer, in the same run: wall time,
# speed-up and test accuracy.
#
#   scripts/bench-sda.sh [--install-torch] [EPOCHS_PER_LAYER FINETUNE_EPOCHS]   # default 15 30
#   DAE_DEVICE=cuda scripts/bench-sda.sh 15 30    # both on the GPU (PyTorch with --device cuda)
#
# Needs Fashion-MNIST and PyTorch (--install-torch installs it with pip). About 40 minutes on
# 2 cores with the defaults. CI does not run this. DAE_NO_BUILD=1 uses target/release/dae as it
# is (on a machine without Rust).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--install-torch" ]; then
    shift
    python3 -m pip install -q torch numpy
fi
PE=${1:-15}
FE=${2:-30}
DATA=${DAE_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
THREADS=${DAE_BENCH_THREADS:-2}
DEVICE=${DAE_DEVICE:-cpu}
[ -x target/release/dae ] && [ -n "${DAE_NO_BUILD:-}" ] || cargo build --release -q -p dae-cli
DAE=target/release/dae
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
now() { date +%s%N; }

t0=$(now)
$DAE pretrain "$DATA/train-images-idx3-ubyte.gz" -o "$WORK/stack.safetensors" --layers 1000,1000,1000 \
    --noise masking:0.1,0.2,0.3 --epochs "$PE" --batch 32 --lr 0.05 --seed 1 --threads "$THREADS" --device "$DEVICE" --quiet
t1=$(now)
$DAE finetune "$WORK/stack.safetensors" "$DATA/train-images-idx3-ubyte.gz" --labels "$DATA/train-labels-idx1-ubyte.gz" \
    -o "$WORK/classifier.safetensors" --epochs "$FE" --batch 32 --lr 0.1 --seed 1 --threads "$THREADS" --device "$DEVICE" --quiet
t2=$(now)
ours=$($DAE evaluate "$WORK/classifier.safetensors" "$DATA/t10k-images-idx3-ubyte.gz" --labels "$DATA/t10k-labels-idx1-ubyte.gz" --json --device "$DEVICE" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["accuracy"])')
theirs=$(python3 bench/peers/torch_sda.py "$DATA" --epochs "$PE" --finetune "$FE" --threads "$THREADS" --device "$DEVICE")

python3 - "$t0" "$t1" "$t2" "$ours" "$theirs" "$PE" "$FE" "$DEVICE" <<'PY'
import json, sys
t0, t1, t2 = (int(v) / 1e9 for v in sys.argv[1:4])
ours, theirs = float(sys.argv[4]), json.loads(sys.argv[5])
pe, fe, device = sys.argv[6], sys.argv[7], sys.argv[8]
ours_total = t2 - t0
theirs_total = theirs["pretrain_s"] + theirs["finetune_s"]
print(f"SdA 784-1000-1000-1000-10, pretraining {pe} epochs per layer, fine-tuning {fe} epochs (recipe of scripts/quality-sda.sh), device {device}\n")
print("| | pretraining | fine-tuning | total | test accuracy |")
print("|---|---|---|---|---|")
print(f"| dae | {t1 - t0:.0f} s | {t2 - t1:.0f} s | {ours_total:.0f} s | {100 * ours:.2f} % |")
print(f"| PyTorch | {theirs['pretrain_s']:.0f} s | {theirs['finetune_s']:.0f} s | {theirs_total:.0f} s | {100 * theirs['accuracy']:.2f} % |")
print(f"| dae speed-up | {theirs['pretrain_s'] / (t1 - t0):.2f}× | {theirs['finetune_s'] / (t2 - t1):.2f}× | {theirs_total / ours_total:.2f}× | |")
PY
