#!/usr/bin/env bash
# How the recommended stacked-autoencoder recipe was chosen: candidate fine-tuning recipes scored
# on validation images held out of the training set (never the test set), mean over SEEDS.
#
#   scripts/sda-sweep.sh [OUT_FILE]     # needs Fashion-MNIST; minutes on a GPU, hours on 2 cores
#
# The first 50,000 training images train (and are pretrained on, with the reference's
# pretraining); images 50,000–59,999 validate. Full labels: each FULL_* recipe on all 50,000
# labels. Few labels: each FEW_* recipe on the first 100 images of each class, pretrained and
# from random initialisation. Prints a table of mean validation accuracies and writes the
# chosen recipes to OUT_FILE (shell assignments REC_FINETUNE=(…) and REC_FEW=(…)): the best
# full-label recipe, and the best pretrained few-label recipe among those that beat their
# from-scratch run by at least 3 points (the best gain when none does).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DAE_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
SEEDS=${SEEDS:-"1 2 3"}
DEVICE=${DAE_DEVICE:-auto}
OUT_FILE=${1:-/dev/null}
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || { echo "Fashion-MNIST not found in $DATA" >&2; exit 2; }
[ -x target/release/dae ] || cargo build --release -q -p dae-cli
DAE=target/release/dae
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

FULL_A=(--epochs 60 --batch 32 --lr 0.1 --lr-decay 0.97 --dropout 0.2 --input-dropout 0.1)
FULL_B=(--epochs 100 --batch 32 --optimizer sgd --momentum 0.9 --lr 0.01 --lr-decay 0.98 --dropout 0.5 --input-dropout 0.2)
FULL_C=(--epochs 100 --batch 32 --lr 0.1 --lr-decay 0.98 --dropout 0.3 --input-dropout 0.2)
FEW_A=(--per-class 100 --epochs 300 --batch 32 --lr 0.1 --dropout 0.5 --input-dropout 0.2)
FEW_B=(--per-class 100 --epochs 300 --batch 32 --lr 0.1 --dropout 0.2 --input-dropout 0.2)
FEW_C=(--per-class 100 --epochs 300 --batch 32 --optimizer sgd --momentum 0.9 --lr 0.01 --dropout 0.5 --input-dropout 0.2)

# Split the training files into 50,000 + 10,000 rows (IDX, as the originals).
python3 - "$DATA" "$WORK" <<'PY'
import gzip, struct, sys
data, work = sys.argv[1:]
def split(name, out_a, out_b, cut):
    raw = gzip.open(f"{data}/{name}").read()
    magic = struct.unpack(">I", raw[:4])[0]
    nd = magic & 0xff
    dims = list(struct.unpack(">" + "I" * nd, raw[4:4 + 4 * nd]))
    width = 1
    for d in dims[1:]:
        width *= d
    body = raw[4 + 4 * nd:]
    for out, lo, hi in [(out_a, 0, cut), (out_b, cut, dims[0])]:
        with open(f"{work}/{out}", "wb") as f:
            f.write(struct.pack(">I", magic) + struct.pack(">" + "I" * nd, hi - lo, *dims[1:]) + body[lo * width:hi * width])
split("train-images-idx3-ubyte.gz", "fit.idx", "val.idx", 50000)
split("train-labels-idx1-ubyte.gz", "fit-labels.idx", "val-labels.idx", 50000)
PY

val_accuracy() {  # the last epoch's validation accuracy of a classifier, in percent
    $DAE inspect "$1" --json | python3 -c 'import json,sys; print(100*json.load(sys.stdin)["history"][-1]["val_accuracy"])'
}
declare -A R
for s in $SEEDS; do
    echo "== seed $s: pretraining on 50,000 images" >&2
    $DAE pretrain "$WORK/fit.idx" -o "$WORK/stack-$s.safetensors" --layers 1000,1000,1000 --noise masking:0.1,0.2,0.3 \
        --epochs 15 --batch 32 --lr 0.05 --seed "$s" --device "$DEVICE" --quiet
    VAL=(--val "$WORK/val.idx" --val-labels "$WORK/val-labels.idx" --seed "$s" --device "$DEVICE" --quiet)
    for c in A B C; do
        declare -n args="FULL_$c"
        $DAE finetune "$WORK/stack-$s.safetensors" "$WORK/fit.idx" --labels "$WORK/fit-labels.idx" -o "$WORK/m.safetensors" "${args[@]}" "${VAL[@]}"
        R[full,$c,$s]=$(val_accuracy "$WORK/m.safetensors")
        echo "   full labels, recipe $c: ${R[full,$c,$s]} %" >&2
        declare -n args="FEW_$c"
        $DAE finetune "$WORK/stack-$s.safetensors" "$WORK/fit.idx" --labels "$WORK/fit-labels.idx" -o "$WORK/m.safetensors" "${args[@]}" "${VAL[@]}"
        R[few,$c,$s]=$(val_accuracy "$WORK/m.safetensors")
        $DAE finetune --from-scratch --layers 1000,1000,1000 "$WORK/fit.idx" --labels "$WORK/fit-labels.idx" -o "$WORK/m.safetensors" "${args[@]}" "${VAL[@]}"
        R[few0,$c,$s]=$(val_accuracy "$WORK/m.safetensors")
        echo "   1,000 labels, recipe $c: pretrained ${R[few,$c,$s]} %, from scratch ${R[few0,$c,$s]} %" >&2
    done
done

python3 - "$SEEDS" "$OUT_FILE" "${FULL_A[*]}" "${FULL_B[*]}" "${FULL_C[*]}" "${FEW_A[*]}" "${FEW_B[*]}" "${FEW_C[*]}" <<PY
import statistics, sys
seeds = sys.argv[1].split()
out = sys.argv[2]
full = dict(zip("ABC", sys.argv[3:6]))
few = dict(zip("ABC", sys.argv[6:9]))
R = {}
$(for k in "${!R[@]}"; do echo "R['$k'] = float('${R[$k]}')"; done)
m = lambda what, c: statistics.mean(R[f"{what},{c},{s}"] for s in seeds)
print("Validation accuracy (images 50,000–59,999 of the training set), mean of seeds " + ", ".join(seeds) + "\n")
print("| recipe | full labels | 1,000 labels, pretrained | 1,000 labels, from scratch | gain |")
print("|---|---|---|---|---|")
for c in "ABC":
    print(f"| {c}: full \`{full[c]}\`; few \`{few[c]}\` | {m('full', c):.2f} % | {m('few', c):.2f} % | {m('few0', c):.2f} % | {m('few', c) - m('few0', c):+.2f} |")
best_full = max("ABC", key=lambda c: m("full", c))
ok = [c for c in "ABC" if m("few", c) - m("few0", c) >= 3]
best_few = max(ok, key=lambda c: m("few", c)) if ok else max("ABC", key=lambda c: m("few", c) - m("few0", c))
print(f"\nchosen: full labels {best_full}, 1,000 labels {best_few}")
with open(out, "w") as f:
    f.write(f"REC_FINETUNE=({full[best_full]})\nREC_FEW=({few[best_few]})\n")
PY
