#!/usr/bin/env bash
# Writes the King James Bible (Debian's bible-kjv-text, public domain, read through its `bible`
# program) as three disjoint splits of whole books, one verse per line, verse numbers and
# chapter headings removed, a blank line between chapters:
#   OUT/train.txt  the 64 other books      OUT/calib.txt  Proverbs      OUT/eval.txt  John
# Usage: scripts/kjv_corpus.sh OUT     (needs: apt-get install bible-kjv)
set -euo pipefail
out=${1:?usage: scripts/kjv_corpus.sh OUT}
command -v bible >/dev/null || { echo "kjv_corpus: 'bible' not found (apt-get install bible-kjv)" >&2; exit 1; }
mkdir -p "$out"
bible -l100000 "Gen1:1-Rev22:21" </dev/null | LC_ALL=C awk -v out="$out" '
  # A heading is "<Book> <chapter>"; the book starts at chapter 1.
  /^[1-3]? ?[A-Z][A-Za-z ]* [0-9]+$/ {
    book = $0; sub(/ [0-9]+$/, "", book)
    file = (book == "Proverbs") ? out "/calib.txt" : (book == "John") ? out "/eval.txt" : out "/train.txt"
    if (started[file]++) print "" > file
    next
  }
  /^ +[0-9]+ / { sub(/^ +[0-9]+ /, ""); print > file }
'
for f in train calib eval; do
  [ -s "$out/$f.txt" ] || { echo "kjv_corpus: $out/$f.txt is empty" >&2; exit 1; }
done
wc -c "$out"/train.txt "$out"/calib.txt "$out"/eval.txt >&2
