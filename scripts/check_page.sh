#!/usr/bin/env bash
# Open the report in headless Chromium (Debian's `chromium`): every figure must render, no console errors,
# and a screenshot of the first screen is written beside the report. Not part of `make test` (needs Chromium).
# Usage: scripts/check_page.sh [analyses/report/report.html]
set -euo pipefail
report="$(realpath "${1:-analyses/report/report.html}")"
[ -f "$report" ] || { echo "error: $report not found; run \`make analyze\` first" >&2; exit 2; }
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian's chromium (needs root and the Debian package registry)..." >&2
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --user-data-dir="$work/profile" --virtual-time-budget=20000)
chromium "${flags[@]}" --enable-logging=stderr --v=0 --dump-dom "file://$report" >"$work/dom.html" 2>"$work/console.log" || true
chromium "${flags[@]}" --window-size=1280,900 --screenshot="$(dirname "$report")/screenshot.png" "file://$report" >/dev/null 2>&1 || true

expected=$(grep -o 'class="plot"' "$report" | wc -l)
rendered=$(grep -o 'class="plot-container plotly"' "$work/dom.html" | wc -l)
# Chromium logs every console message as `INFO:CONSOLE:<line>] "<message>"`; any of them counts.
errors=$(grep -E 'CONSOLE[:(]|Uncaught' "$work/console.log" || true)
echo "figures in the page: $expected, rendered by plotly: $rendered"
status=0
if [ "$expected" -eq 0 ] || [ "$rendered" -lt "$expected" ]; then
  echo "FAIL: not every figure rendered" >&2; status=1
fi
if [ -n "$errors" ]; then
  echo "FAIL: console errors:" >&2; echo "$errors" >&2; status=1
else
  echo "console: no errors"
fi
if [ -s "$(dirname "$report")/screenshot.png" ]; then
  echo "screenshot: $(dirname "$report")/screenshot.png"
else
  echo "FAIL: no screenshot written" >&2; status=1
fi
exit $status
