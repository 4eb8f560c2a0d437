#!/usr/bin/env bash
# Fuzzes the readers (IDX, NPY, CSV) and the model-file reader with libFuzzer through cargo-fuzz,
# each for SECONDS (default 600), and appends what happened to fuzz/RESULTS.md.
#
#   scripts/fuzz.sh [SECONDS] [TARGET…]        # targets: idx npy csv model (default: all)
#
# Installs cargo-fuzz if needed. The toolchain is stable, so the nightly-only flags cargo-fuzz
# uses are enabled with RUSTC_BOOTSTRAP=1. A crash leaves its input in fuzz/artifacts/TARGET/;
# copy it to fuzz/regressions/TARGET/ so that `cargo test` keeps checking it.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-600}
shift || true
TARGETS=${*:-idx npy csv model}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
cd fuzz
for t in $TARGETS; do
    mkdir -p "corpus/$t"
    # Seed the corpus with the project's own malformed files and a few good ones.
    cp ../crates/dae-cli/tests/malformed/* "corpus/$t/" 2>/dev/null || true
    [ -d "regressions/$t" ] && cp "regressions/$t"/* "corpus/$t/" 2>/dev/null || true
    log=$(mktemp)
    start=$(date -u +%Y-%m-%dT%H:%MZ)
    t0=$(date +%s)
    status=0
    cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -malloc_limit_mb=2048 -print_final_stats=1 > "$log" 2>&1 || status=$?
    execs=$(grep -a -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    crashes=$(ls "artifacts/$t" 2>/dev/null | wc -l)
    result="no crash, no hang, no runaway allocation"
    [ "$status" -eq 0 ] || result="FAILED (exit $status): see fuzz/artifacts/$t; $(grep -a -m1 -E 'ERROR|panicked' "$log" || true)"
    line="| $start | $t | $(( $(date +%s) - t0 )) s (of ${SECONDS_EACH} s) | $execs | $result |"
    echo "$line"
    [ -f RESULTS.md ] || printf '# Fuzzing runs\n\nEach line is one run of scripts/fuzz.sh (libFuzzer through cargo-fuzz).\n\n| started (UTC) | target | time | executions | result |\n|---|---|---|---|---|\n' > RESULTS.md
    echo "$line" >> RESULTS.md
    tail -5 "$log"
    rm -f "$log"
done
