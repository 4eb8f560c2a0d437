#!/usr/bin/env bash
# Stacked denoising autoencoders on Fashion-MNIST, beside the PyTorch reference
# (../shared/reference/REFERENCE.md, `torch_sda.py sda 15 30`).
#
#   scripts/quality-sda.sh            # needs: apt-get install dataset-fashion-mnist; 3-4 h on 2 cores, 5 min on a GPU
#   SEEDS="1" scripts/quality-sda.sh  # one seed of the recommended recipe only
#   DAE_DEVICE=cuda scripts/quality-sda.sh   # on a GPU (default: auto)
#   RECIPE=FILE scripts/quality-sda.sh       # the recommended recipe from FILE (scripts/sda-sweep.sh)
#   DAE_SDA_WORK=DIR scripts/quality-sda.sh  # keep the models in DIR; a rerun resumes from them
#
# Network 784-1000-1000-1000-10, sigmoid units, test accuracy on the 10,000 test images.
#  (a) all 60,000 labels; (b) the first 100 labelled images of each class (1,000 in all), with
#      the network pretrained on all 60,000 images, and the same network from random
#      initialisation; (c) the wall time of (a).
# Each with the reference's exact recipe (one run, seed 1) and with the recipe the README
# recommends (mean over SEEDS).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DAE_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
SEEDS=${SEEDS:-"1 2 3"}
DEVICE=${DAE_DEVICE:-auto}
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || { echo "Fashion-MNIST not found in $DATA (apt-get install dataset-fashion-mnist)" >&2; exit 2; }
[ -x target/release/dae ] && [ -n "${DAE_NO_BUILD:-}" ] || cargo build --release -q -p dae-cli
DAE=target/release/dae
# DAE_SDA_WORK=DIR keeps the stacks and models in DIR; a rerun with the same DIR reuses every
# one already there (their commands are in their names), so an interrupted run resumes.
if [ -n "${DAE_SDA_WORK:-}" ]; then
    WORK=$DAE_SDA_WORK
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
fi
TRAIN="$DATA/train-images-idx3-ubyte.gz"
LABELS="$DATA/train-labels-idx1-ubyte.gz"
TEST="$DATA/t10k-images-idx3-ubyte.gz"
TEST_LABELS="$DATA/t10k-labels-idx1-ubyte.gz"

# The reference recipe.
REF_PRETRAIN=(--layers 1000,1000,1000 --noise masking:0.1,0.2,0.3 --epochs 15 --batch 32 --lr 0.05)
REF_FINETUNE=(--epochs 30 --batch 32 --lr 0.1)
REF_FEW=(--per-class 100 --epochs 200 --batch 32 --lr 0.1)
# The recommended recipe (README, "Recommended recipe"; chosen on held-out training images by
# scripts/sda-sweep.sh, see BENCHMARKS.md): longer pretraining (80 epochs per layer); with all
# labels 100 epochs with a decaying rate on images moved by up to a pixel and mirrored; with
# 1,000 labels light dropout and longer.
REC_PRETRAIN=(--layers 1000,1000,1000 --noise masking:0.1,0.2,0.3 --epochs 80 --batch 32 --lr 0.05)
REC_FINETUNE=(--epochs 100 --batch 32 --lr 0.1 --lr-decay 0.97 --shift 1 --flip)
REC_FEW=(--per-class 100 --epochs 300 --batch 32 --lr 0.1 --dropout 0.2 --input-dropout 0.2)
if [ -n "${RECIPE:-}" ]; then
    [ -f "$RECIPE" ] || { echo "no recipe file $RECIPE: using the recipe above" >&2; RECIPE=; }
    # shellcheck disable=SC1090
    [ -z "$RECIPE" ] || . "$RECIPE"
fi

now() { date +%s%N; }
secs() { echo $(( ($2 - $1) / 1000000 )); }  # milliseconds between two `now`s
accuracy() {
    $DAE evaluate "$1" "$TEST" --labels "$TEST_LABELS" --json --device "$DEVICE" | python3 -c 'import json,sys; print(100*json.load(sys.stdin)["accuracy"])'
}
log() { echo "$*" >&2; }

declare -A R
# Runs `$DAE ARGS… -o OUT …` unless OUT exists: the outputs are named after their commands, so
# the reference and the recommended recipe share the steps they have in common, and a rerun in
# the same DAE_SDA_WORK reuses them. OUT.ms keeps the run's wall time in milliseconds.
once() {
    local out="" prev="" t0
    for a in "$@"; do [ "$prev" = "-o" ] && out=$a; prev=$a; done
    if [ ! -f "$out" ]; then
        t0=$(now)
        "$DAE" "$@" --device "$DEVICE" --quiet
        secs "$t0" "$(now)" > "$out.ms"
    fi
}
name_of() { echo "$*" | md5sum | cut -c1-12; }
run_recipe() {  # name seed pretrain-args… -- finetune-args… -- few-args…
    local name=$1 seed=$2; shift 2
    local pre=() fine=() few=()
    while [ "$1" != "--" ]; do pre+=("$1"); shift; done; shift
    while [ "$1" != "--" ]; do fine+=("$1"); shift; done; shift
    few=("$@")
    local stack="$WORK/stack-$(name_of "${pre[@]}" "$seed").safetensors"
    local full="$WORK/full-$(name_of "${pre[@]}" "${fine[@]}" "$seed").safetensors"
    local few_pre="$WORK/few-$(name_of "${pre[@]}" "${few[@]}" "$seed").safetensors"
    local few0="$WORK/few0-$(name_of "${few[@]}" "$seed").safetensors"
    log "== $name recipe, seed $seed: pretraining"
    once pretrain "$TRAIN" -o "$stack" "${pre[@]}" --seed "$seed"
    log "== $name recipe, seed $seed: fine-tuning on all labels"
    once finetune "$stack" "$TRAIN" --labels "$LABELS" -o "$full" "${fine[@]}" --seed "$seed"
    R[$name,$seed,full]=$(accuracy "$full")
    R[$name,$seed,pretrain_ms]=$(cat "$stack.ms")
    R[$name,$seed,finetune_ms]=$(cat "$full.ms")
    log "   all labels: ${R[$name,$seed,full]} %"
    log "== $name recipe, seed $seed: 1,000 labels, pretrained and from scratch"
    once finetune "$stack" "$TRAIN" --labels "$LABELS" -o "$few_pre" "${few[@]}" --seed "$seed"
    R[$name,$seed,few]=$(accuracy "$few_pre")
    once finetune --from-scratch --layers 1000,1000,1000 "$TRAIN" --labels "$LABELS" -o "$few0" "${few[@]}" --seed "$seed"
    R[$name,$seed,few0]=$(accuracy "$few0")
    log "   1,000 labels: pretrained ${R[$name,$seed,few]} %, from scratch ${R[$name,$seed,few0]} %"
}

run_recipe reference 1 "${REF_PRETRAIN[@]}" -- "${REF_FINETUNE[@]}" -- "${REF_FEW[@]}"
for s in $SEEDS; do
    run_recipe recommended "$s" "${REC_PRETRAIN[@]}" -- "${REC_FINETUNE[@]}" -- "${REC_FEW[@]}"
done

python3 - "$SEEDS" "$(nproc)" "$DEVICE" "${REC_FINETUNE[*]}" "${REC_FEW[*]}" "${REC_PRETRAIN[*]}" <<PY
import sys, statistics
seeds = sys.argv[1].split()
cores = sys.argv[2]
device = sys.argv[3]
print(f"device {device}; recommended recipe: pretraining \`{sys.argv[6]}\`; fine-tuning \`{sys.argv[4]}\`; 1,000 labels \`{sys.argv[5]}\`\n")
R = {}
$(for k in "${!R[@]}"; do echo "R['$k'] = float('${R[$k]}')"; done)
def mean(name, what):
    return statistics.mean(R[f"{name},{s},{what}"] for s in (seeds if name == "recommended" else ["1"]))
print("| run | dae, reference recipe (seed 1) | dae, recommended recipe (mean of seeds %s) | PyTorch reference (CPU run / GPU run) |" % ", ".join(seeds))
print("|---|---|---|---|")
print(f"| (a) SdA, all 60k labels | {mean('reference','full'):.2f} % | {mean('recommended','full'):.2f} % | 89.32 % / 90.24 % |")
print(f"| (b) SdA pretrained on 60k, fine-tuned on 1,000 labels | {mean('reference','few'):.2f} % | {mean('recommended','few'):.2f} % | 81.99 % / 82.05 % |")
print(f"| (b) same network from random initialisation, 1,000 labels | {mean('reference','few0'):.2f} % | {mean('recommended','few0'):.2f} % | 78.97 % / 79.29 % |")
print(f"| (b) pretraining's gain | {mean('reference','few') - mean('reference','few0'):+.2f} points | {mean('recommended','few') - mean('recommended','few0'):+.2f} points | +3.02 / +2.76 points |")
pre, fine = R["reference,1,pretrain_ms"] / 1000, R["reference,1,finetune_ms"] / 1000
print(f"| (c) wall time of (a), reference recipe ({device}; {cores} cores) | {pre + fine:.0f} s (pretraining {pre:.0f} s, fine-tuning {fine:.0f} s) | | 628 s (350 s + 278 s) on 2 cores; 242 s on an H200 |")
print()
for s in seeds:
    print(f"seed {s}, recommended: all labels {R[f'recommended,{s},full']:.2f} %, 1,000 labels {R[f'recommended,{s},few']:.2f} % pretrained, {R[f'recommended,{s},few0']:.2f} % from scratch")
PY
