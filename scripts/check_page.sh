#!/usr/bin/env bash
# Open the report in headless Chromium (Debian's `chromium`) and check every figure: each `figure.plot` of the
# page is drawn by plotly with non-empty data in its visible traces, the console stays free of errors, and a
# screenshot of the first screen is written beside the report. Not part of `make test` (needs Chromium).
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

# A copy of the page with a checker that writes one line per figure into the DOM (console output would count as errors).
checker='<script>window.addEventListener("load",function(){setTimeout(function(){var out=[];
document.querySelectorAll("figure.plot").forEach(function(f){var gd=f.querySelector(".js-plotly-plot");
var name=f.getAttribute("data-figure")||"?";if(!gd||!gd.data){out.push(name+" FAIL not drawn");return;}
var shown=gd.data.filter(function(t){return t.visible!==false;});
function size(t){return Math.max((t.x||[]).length,(t.y||[]).length,(t.z||[]).length);}
var empty=shown.filter(function(t){return size(t)===0;}).length;
var ok=shown.length>0&&empty===0&&f.querySelector(".main-svg")!==null;
out.push(name+(ok?" OK ":" FAIL ")+shown.length+" visible traces, "+empty+" empty, "+gd.data.length+" in all");});
var pre=document.createElement("pre");pre.id="figure-check";pre.textContent=out.join("\n");document.body.appendChild(pre);},500);});</script>'
python3 - "$report" "$work/page.html" "$checker" <<'EOF'
import sys
page = open(sys.argv[1], encoding="utf-8").read()
open(sys.argv[2], "w", encoding="utf-8").write(page.replace("</body>", sys.argv[3] + "</body>", 1))
EOF

flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --user-data-dir="$work/profile" --virtual-time-budget=20000)
chromium "${flags[@]}" --enable-logging=stderr --v=0 --dump-dom "file://$work/page.html" >"$work/dom.html" 2>"$work/console.log" || true
chromium "${flags[@]}" --window-size=1280,900 --screenshot="$(dirname "$report")/screenshot.png" "file://$report" >/dev/null 2>&1 || true

expected=$(grep -o 'class="plot"' "$report" | wc -l)
results=$(python3 - "$work/dom.html" <<'EOF'
import html, re, sys
match = re.search(r'<pre id="figure-check">(.*?)</pre>', open(sys.argv[1], encoding="utf-8").read(), re.S)
print(html.unescape(match.group(1)) if match else "")
EOF
)
# Chromium logs every console message as `INFO:CONSOLE:<line>] "<message>"`; any of them counts.
errors=$(grep -E 'CONSOLE[:(]|Uncaught' "$work/console.log" || true)
status=0
echo "figures in the page: $expected"
if [ -n "$results" ]; then echo "$results" | sed 's/^/  /'; fi
passed=$(printf '%s\n' "$results" | grep -c ' OK ' || true)
if [ "$expected" -eq 0 ] || [ "$passed" -ne "$expected" ]; then
  echo "FAIL: $passed of $expected figures drawn with non-empty data" >&2; status=1
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
