#!/usr/bin/env bash
# Determinism to the byte: the same `fragile map` run twice with 2 threads, into --out paths of
# different lengths (which move the heap), writes the same bytes in every file: results.json
# (its "run" section of timings aside), the store, the tables, the plots and the pages. Once with
# RTN and once with GPTQ (its per-row losses), each against its own rerun.
# Usage: determinism.sh FRAGILE_BINARY WORK_DIR
set -euo pipefail
bin=$1 work=$2
rm -rf "$work" && mkdir -p "$work"
strip_run() { sed '/^  "run": {/,/^  }/d' "$1"; }
for quantizer in rtn gptq; do
  args=(map --quiet --quantizer "$quantizer" --bits 2 --group-size 32 --calib-windows 16
        --eval-tokens 4096 --bootstrap 200 --threads 2)
  a=$work/$quantizer b=$work/$quantizer-again-into-a-longer-path
  "$bin" "${args[@]}" --out "$a" >/dev/null
  "$bin" "${args[@]}" --out "$b" >/dev/null
  diff <(strip_run "$a/results.json") <(strip_run "$b/results.json") ||
    { echo "determinism: $quantizer results.json differs between identical runs" >&2; exit 1; }
  n=0
  while read -r f; do
    cmp "$a/$f" "$b/$f" || { echo "determinism: $quantizer $f differs between identical runs" >&2; exit 1; }
    n=$((n + 1))
  done < <(cd "$a" && find . -type f ! -name results.json | sort)
  echo "determinism: $quantizer: results.json and $n other files identical"
done
