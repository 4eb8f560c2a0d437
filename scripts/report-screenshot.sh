#!/usr/bin/env bash
# Renders an HTML report in headless Chromium, as a person would see it, and saves a screenshot.
#
#   scripts/report-screenshot.sh [REPORT.html] [SCREENSHOT.png]
#
# Without a report, trains the demo (`dae demo`) and shots its report. Needs Debian's chromium
# package (apt-get install chromium); the page must render offline, as reports do.
set -euo pipefail
cd "$(dirname "$0")/.."
REPORT=${1:-}
SHOT=${2:-report.png}
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || { echo "chromium not found: apt-get install chromium" >&2; exit 2; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ -z "$REPORT" ]; then
    cargo build --release -q -p dae-cli
    target/release/dae demo -o "$WORK/demo" --epochs 3 --quiet
    REPORT="$WORK/demo/report.html"
fi
# No network at all: a report that needed one would show broken images in the shot.
"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$WORK/profile" --hide-scrollbars --window-size=1100,5200 \
    --screenshot="$SHOT" "file://$(realpath "$REPORT")" 2> "$WORK/chromium.log" \
    || { cat "$WORK/chromium.log" >&2; exit 1; }
echo "wrote $SHOT (a screenshot of $REPORT)"
