#!/usr/bin/env bash
# How the recommended stacked-autoencoder recipe was chosen: candidate fine-tuning recipes scored
# on validation images held out of the training set (never the test set).
#
#   scripts/sda-sweep.sh [OUT_FILE]     # needs Fashion-MNIST; minutes on a GPU, hours on 2 cores
#   DAE_DEVICE=cuda SEEDS="1 2 3" FULL_SEEDS="1" scripts/sda-sweep.sh rec.sh   # the defaults, on a GPU
#   PRETRAIN="--epochs 40" scripts/sda-sweep.sh    # another pretraining (dae pretrain's arguments)
#   FULLS="0 8" FEWS="1" scripts/sda-sweep.sh       # only these candidates (default: all)
#   JOBS=4 DAE_DEVICE=cuda scripts/sda-sweep.sh     # up to 4 runs (pretrainings, fine-tunes) at once:
#                                                   # for a GPU, which one run at batch 32 leaves mostly idle
#
# The first 50,000 training images train (and are pretrained on, with the reference's
# pretraining or the arguments in PRETRAIN); images 50,000–59,999 validate. Full labels: each FULL_* recipe on all 50,000
# labels, seeds FULL_SEEDS. Few labels: each FEW_* recipe on the first 100 images of each class,
# pretrained and from random initialisation, seeds SEEDS. Prints a table of mean validation accuracies and writes the
# chosen recipes to OUT_FILE (shell assignments REC_PRETRAIN=(…), REC_FINETUNE=(…) and REC_FEW=(…)): the best
# full-label recipe, and the best pretrained few-label recipe among those that beat their
# from-scratch run by at least 3 points (the best gain when none does).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DAE_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
SEEDS=${SEEDS:-"1 2 3"}
FULL_SEEDS=${FULL_SEEDS:-"1"}
DEVICE=${DAE_DEVICE:-auto}
OUT_FILE=${1:-/dev/null}
# The pretraining of every pretrained candidate (default: the reference's).
PRETRAIN=${PRETRAIN:-"--layers 1000,1000,1000 --noise masking:0.1,0.2,0.3 --epochs 15 --batch 32 --lr 0.05"}
read -ra PRE <<< "$PRETRAIN"
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || { echo "Fashion-MNIST not found in $DATA" >&2; exit 2; }
[ -x target/release/dae ] && [ -n "${DAE_NO_BUILD:-}" ] || cargo build --release -q -p dae-cli
DAE=target/release/dae
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Candidates (all batch 32 unless said). FULL_0 and FEW_0 are the reference's fine-tuning.
FULL_0=(--epochs 30 --batch 32 --lr 0.1)
FULL_1=(--epochs 150 --batch 32 --lr 0.1 --lr-decay 0.98 --dropout 0.5 --input-dropout 0.2)
FULL_2=(--epochs 150 --batch 32 --momentum 0.9 --lr 0.02 --lr-decay 0.98 --dropout 0.5 --input-dropout 0.2)
FULL_3=(--epochs 100 --batch 32 --lr 0.1 --lr-decay 0.97 --dropout 0.2 --input-dropout 0.1)
FULL_4=(--epochs 60 --batch 32 --optimizer adam --lr 0.0001 --dropout 0.3 --input-dropout 0.1)
FULL_5=(--epochs 200 --batch 32 --lr 0.1 --lr-decay 0.985 --dropout 0.3 --input-dropout 0.2)
FULL_6=(--epochs 150 --batch 32 --lr 0.2 --lr-decay 0.97 --dropout 0.5 --input-dropout 0.2)
FULL_7=(--epochs 100 --batch 128 --momentum 0.9 --lr 0.05 --lr-decay 0.97 --dropout 0.5 --input-dropout 0.2)
FULL_8=(--epochs 40 --batch 32 --lr 0.1 --lr-decay 0.93)
FULL_9=(--epochs 60 --batch 32 --lr 0.1 --lr-decay 0.95 --shift 1 --flip)
FULL_10=(--epochs 100 --batch 32 --lr 0.1 --lr-decay 0.97 --shift 1 --flip)
FULL_11=(--epochs 60 --batch 32 --lr 0.1 --lr-decay 0.95 --flip)
FULL_12=(--epochs 100 --batch 32 --lr 0.1 --lr-decay 0.97 --shift 1 --flip --dropout 0.2 --input-dropout 0.1)
FULL_13=(--epochs 100 --batch 32 --momentum 0.9 --lr 0.01 --lr-decay 0.96 --shift 1 --flip)
FEW_0=(--per-class 100 --epochs 200 --batch 32 --lr 0.1)
FEW_1=(--per-class 100 --epochs 300 --batch 32 --lr 0.1 --dropout 0.2 --input-dropout 0.2)
FEW_2=(--per-class 100 --epochs 300 --batch 32 --lr 0.1 --dropout 0.5 --input-dropout 0.2)
FEW_3=(--per-class 100 --epochs 400 --batch 32 --lr 0.1 --lr-decay 0.995 --dropout 0.5 --input-dropout 0.3)
FEW_4=(--per-class 100 --epochs 100 --batch 32 --lr 0.05)
FEW_5=(--per-class 100 --epochs 300 --batch 32 --momentum 0.9 --lr 0.01 --dropout 0.5 --input-dropout 0.3)
FEW_6=(--per-class 100 --epochs 400 --batch 32 --lr 0.1 --dropout 0.3 --input-dropout 0.3 --weight-decay 0.0001)
FULLS=${FULLS:-$(compgen -A variable FULL_ | sed 's/FULL_//' | grep -E '^[0-9]+$' | sort -n | tr '\n' ' ')}
FEWS=${FEWS:-$(compgen -A variable FEW_ | sed 's/FEW_//' | grep -E '^[0-9]+$' | sort -n | tr '\n' ' ')}
JOBS=${JOBS:-1}
for c in $FULLS; do declare -p "FULL_$c" >/dev/null 2>&1 || { echo "no candidate FULL_$c" >&2; exit 2; }; done
for c in $FEWS; do declare -p "FEW_$c" >/dev/null 2>&1 || { echo "no candidate FEW_$c" >&2; exit 2; }; done

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
# Each run writes its validation accuracy to $WORK/r/KIND,CANDIDATE,SEED; up to JOBS run at once.
mkdir -p "$WORK/r"
PIDS=()
failed() {  # stops at the first failed run, and stops the others
    echo "a run failed: stopping" >&2
    local p
    for p in $(jobs -rp); do pkill -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
    wait || true
    exit 1
}
start() {  # runs "$@" in the background once fewer than JOBS runs are under way
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || failed; done
    "$@" &
    PIDS+=($!)
}
finish() {  # waits for every run started
    local p
    for p in "${PIDS[@]}"; do wait "$p" || failed; done
    PIDS=()
}
pretrain() {  # seed
    echo "== seed $1: pretraining on 50,000 images" >&2
    $DAE pretrain "$WORK/fit.idx" -o "$WORK/stack-$1.safetensors" "${PRE[@]}" --seed "$1" --device "$DEVICE" --quiet
}
finetune() {  # kind (full, few or few0) candidate seed
    local -n args="$([ "$1" = full ] && echo FULL || echo FEW)_$2"
    local m="$WORK/m-$1-$2-$3.safetensors" from=("$WORK/stack-$3.safetensors")
    [ "$1" = few0 ] && from=(--from-scratch --layers 1000,1000,1000)
    $DAE finetune "${from[@]}" "$WORK/fit.idx" --labels "$WORK/fit-labels.idx" -o "$m" "${args[@]}" \
        --val "$WORK/val.idx" --val-labels "$WORK/val-labels.idx" --seed "$3" --device "$DEVICE" --quiet
    val_accuracy "$m" > "$WORK/r/$1,$2,$3"
    rm -f "$m"
    echo "   seed $3, $1 recipe $2: $(cat "$WORK/r/$1,$2,$3") %" >&2
}
for s in $SEEDS; do start pretrain "$s"; done
finish
for s in $SEEDS; do
    # Full-label runs are long and vary little with the seed: FULL_SEEDS of them.
    for c in $FULLS; do
        case " $FULL_SEEDS " in *" $s "*) start finetune full "$c" "$s" ;; esac
    done
    for c in $FEWS; do
        start finetune few "$c" "$s"
        start finetune few0 "$c" "$s"
    done
done
finish
declare -A R
for f in "$WORK"/r/*; do R[$(basename "$f")]=$(cat "$f"); done

{
    for c in $FULLS; do declare -n a="FULL_$c"; echo "full $c ${a[*]}"; done
    for c in $FEWS; do declare -n a="FEW_$c"; echo "few $c ${a[*]}"; done
    for k in "${!R[@]}"; do echo "R $k ${R[$k]}"; done
} | python3 -c '
import statistics, sys
seeds, full_seeds, out, pretrain = sys.argv[1].split(), sys.argv[2].split(), sys.argv[3], sys.argv[4]
full, few, R = {}, {}, {}
for line in sys.stdin:
    kind, key, rest = line.rstrip("\n").split(" ", 2)
    if kind == "full": full[key] = rest
    elif kind == "few": few[key] = rest
    else: R[key] = float(rest)
FULL = "full"
m = lambda what, c, ss: statistics.mean(R[f"{what},{c},{s}"] for s in ss)
print(f"Validation accuracy (images 50,000-59,999 of the training set); pretraining `{pretrain}`\n")
fs, ss = ", ".join(full_seeds), ", ".join(seeds)
print(f"Full labels (mean of seeds {fs}):\n")
print("| recipe | validation accuracy |")
print("|---|---|")
for c in full:
    print(f"| {c}: `{full[c]}` | {m(FULL, c, full_seeds):.2f} % |")
print(f"\n1,000 labels (mean of seeds {ss}):\n")
print("| recipe | pretrained | from scratch | gain |")
print("|---|---|---|---|")
for c in few:
    p, p0 = m("few", c, seeds), m("few0", c, seeds)
    print(f"| {c}: `{few[c]}` | {p:.2f} % | {p0:.2f} % | {p - p0:+.2f} |")
best_full = max(full, key=lambda c: m("full", c, full_seeds))
ok = [c for c in few if m("few", c, seeds) - m("few0", c, seeds) >= 3]
best_few = max(ok, key=lambda c: m("few", c, seeds)) if ok else max(few, key=lambda c: m("few", c, seeds) - m("few0", c, seeds))
print(f"\nchosen: full labels {best_full}, 1,000 labels {best_few}")
with open(out, "w") as f:
    f.write(f"REC_PRETRAIN=({pretrain})\nREC_FINETUNE=({full[best_full]})\nREC_FEW=({few[best_few]})\n")
' "$SEEDS" "$FULL_SEEDS" "$OUT_FILE" "$PRETRAIN"
