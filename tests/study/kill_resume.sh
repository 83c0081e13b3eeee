#!/usr/bin/env bash
# `fragile shootout` killed with SIGKILL twice (during the RestoreOne sweep and during the
# QuantizeOne sweeps) and continued with --resume ends with the uninterrupted run's
# results.json (its "run" section of timings and resume counts aside) and the same bytes in
# every table, plot and page; a second uninterrupted run gives the same bytes again.
# Usage: kill_resume.sh FRAGILE_BINARY WORK_DIR
set -euo pipefail
bin=$1 work=$2
rm -rf "$work" && mkdir -p "$work"
args=(shootout --quiet --bits 2 --group-size 32 --calib-windows 16 --eval-tokens 4096
      --budget 3 --bootstrap 200 --threads 1)
"$bin" "${args[@]}" --out "$work/full" >/dev/null
"$bin" "${args[@]}" --out "$work/again" >/dev/null

# Runs until the store holds $1 records, then kills it without warning.
run_and_kill() {
  "$bin" "${args[@]}" --out "$work/killed" "${@:2}" >/dev/null &
  local pid=$! i
  for i in $(seq 1 1200); do
    [ -f "$work/killed/store.jsonl" ] && [ "$(wc -l < "$work/killed/store.jsonl")" -ge "$1" ] && break
    sleep 0.05
  done
  kill -KILL "$pid" || { echo "kill_resume: the run ended before it could be killed" >&2; exit 1; }
  wait "$pid" 2>/dev/null || true
  [ ! -f "$work/killed/results.json" ] || { echo "kill_resume: killed run already finished" >&2; exit 1; }
}
run_and_kill 15                 # inside RestoreOne
run_and_kill 80 --resume        # inside the QuantizeOne sweeps
"$bin" "${args[@]}" --out "$work/killed" --resume >/dev/null
grep -q '"oracle_evaluations_resumed": [1-9]' "$work/killed/results.json" ||
  { echo "kill_resume: the last run did not resume" >&2; exit 1; }

# results.json without its "run" section (the last key, written by nlohmann::json::dump(2)).
strip_run() { sed '/^  "run": {/,/^  }/d' "$1"; }
for other in again killed; do
  diff <(strip_run "$work/full/results.json") <(strip_run "$work/$other/results.json") ||
    { echo "kill_resume: results.json of '$other' differs" >&2; exit 1; }
  (cd "$work/full" && find . -type f ! -name results.json ! -name store.jsonl | sort) > "$work/files"
  while read -r f; do
    cmp "$work/full/$f" "$work/$other/$f" || { echo "kill_resume: $f of '$other' differs" >&2; exit 1; }
  done < "$work/files"
done
echo "kill_resume: killed twice, resumed; results.json and $(wc -l < "$work/files") report files identical"
