#!/usr/bin/env bash
# Checks a rendered study report in headless Chromium and takes a screenshot of it:
#   scripts/check_report.sh DIR SCREENSHOT.png
# Fails (exit 1, with a message) if DIR/index.html logs anything to the console (the page has
# no JavaScript, so any console message is an error: a script, a blocked resource...) or if
# one of its images does not load. Exit 77 (skipped) when chromium is not installed.
#
# The image check loads a small wrapper page that shows index.html in an iframe; its script
# runs after the load event (when every image has loaded or failed), looks at each <img> of
# the frame and writes its verdict into the DOM, which --dump-dom prints. Reading the frame
# needs --allow-file-access-from-files (file:// pages are otherwise cross-origin).
set -euo pipefail
usage="usage: scripts/check_report.sh DIR-WITH-INDEX.HTML SCREENSHOT.png"
dir=${1:?$usage}
shot=${2:?$usage}
chromium=${CHROMIUM:-chromium}
if ! command -v "$chromium" >/dev/null; then
  echo "check_report: '$chromium' not found: skipped (apt-get install chromium)" >&2
  exit 77
fi
[ -f "$dir/index.html" ] || { echo "check_report: '$dir/index.html' does not exist" >&2; exit 1; }
dir=$(cd "$dir" && pwd)
mkdir -p "$(dirname "$shot")"
shot="$(cd "$(dirname "$shot")" && pwd)/$(basename "$shot")"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# file:// URL of a path: every byte but [A-Za-z0-9/._~-] percent-encoded.
file_url() {
  local s=$1 out="" c i
  local LC_ALL=C
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      [A-Za-z0-9/._~-]) out+=$c ;;
      *) out+=$(printf '%%%02X' "'$c") ;;
    esac
  done
  printf 'file://%s' "$out"
}
page=$(file_url "$dir/index.html")

cat >"$work/wrapper.html" <<EOF
<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>check_report</title></head><body>
<iframe id="report" src="$page" width="1280" height="2000"></iframe>
<pre id="verdict">PENDING: the load event never came</pre>
<script>
window.addEventListener('load', function () {
  var out = document.getElementById('verdict');
  try {
    var doc = document.getElementById('report').contentDocument;
    if (!doc || !doc.body) { out.textContent = 'FAIL: index.html did not load'; return; }
    var images = doc.images, broken = [];
    for (var i = 0; i < images.length; ++i)
      if (!(images[i].complete && images[i].naturalWidth > 0))
        broken.push(images[i].getAttribute('src'));
    out.textContent = broken.length ? 'FAIL: images that did not load: ' + broken.join(' ')
                                    : 'OK: ' + images.length + ' images loaded';
  } catch (e) {
    out.textContent = 'FAIL: cannot inspect index.html: ' + e;
  }
});
</script>
</body></html>
EOF

flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --allow-file-access-from-files
       --enable-logging=stderr --v=0)
status=0
timeout 60 "$chromium" "${flags[@]}" --user-data-dir="$work/profile-dom" \
  --dump-dom "$(file_url "$work/wrapper.html")" >"$work/dom.html" 2>"$work/dom.log" || status=$?
if [ "$status" -ne 0 ]; then
  echo "check_report: chromium failed (status $status) loading $dir/index.html:" >&2
  tail -n 20 "$work/dom.log" >&2
  exit 1
fi
verdict=$(sed -n 's:.*<pre id="verdict">\(.*\)</pre>.*:\1:p' "$work/dom.html")
[ -n "$verdict" ] || verdict="FAIL: no verdict in the dumped DOM"

timeout 60 "$chromium" "${flags[@]}" --user-data-dir="$work/profile-shot" \
  --window-size=1280,2000 --screenshot="$shot" "$page" \
  >"$work/shot.out" 2>"$work/shot.log" || status=$?

# Chromium logs every console message as "...:CONSOLE...] "message", source: URL (line)".
console=$(cat "$work/dom.log" "$work/shot.log" | grep -F ':CONSOLE' || true)

failed=0
if [ -n "$console" ]; then
  echo "check_report: $dir/index.html wrote to the console:" >&2
  echo "$console" >&2
  failed=1
fi
case $verdict in
  OK:*) echo "check_report: $verdict" ;;
  *) echo "check_report: $dir/index.html: $verdict" >&2; failed=1 ;;
esac
if [ "$status" -ne 0 ] || [ ! -s "$shot" ]; then
  echo "check_report: no screenshot written to $shot (chromium status $status)" >&2
  tail -n 20 "$work/shot.log" >&2
  failed=1
else
  echo "check_report: screenshot $shot"
fi
exit "$failed"
