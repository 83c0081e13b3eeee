#!/usr/bin/env bash
# `fragile train` killed with SIGKILL mid-run and restarted with --resume ends with the same
# model bytes as an uninterrupted run.   Usage: kill_resume.sh FRAGILE_BINARY WORK_DIR
set -euo pipefail
bin=$1 work=$2
src=$(cd "$(dirname "$0")/../.." && pwd)/examples/models/kjv-tiny
rm -rf "$work" && mkdir -p "$work"
args=(train --threads 1 --quiet --tokenizer "$src/tokenizer.json" --text "$src/calib.txt"
      --eval "$src/eval.txt" --eval-tokens 2048 --hidden 32 --layers 2 --heads 4 --kv-heads 2
      --intermediate 64 --seqlen 32 --batch 4 --steps 300 --warmup 10 --checkpoint-every 10
      --eval-every 100 --seed 3)
"$bin" "${args[@]}" --out "$work/full" >/dev/null

"$bin" "${args[@]}" --out "$work/killed" >/dev/null &
pid=$!
# Wait for a checkpoint and a few more steps, then kill without warning.
for _ in $(seq 1 600); do
  [ -f "$work/killed/checkpoint.safetensors" ] && [ "$(wc -l < "$work/killed/train_log.jsonl")" -ge 25 ] && break
  sleep 0.05
done
kill -KILL "$pid" || { echo "kill_resume: the run ended before it could be killed" >&2; exit 1; }
wait "$pid" 2>/dev/null || true
[ ! -f "$work/killed/model.safetensors" ] || { echo "kill_resume: killed run already finished" >&2; exit 1; }
"$bin" "${args[@]}" --out "$work/killed" --resume >/dev/null
grep -q '"resumed_from_step": [1-9]' "$work/killed/training.json" ||
  { echo "kill_resume: the second run did not resume" >&2; exit 1; }
cmp "$work/full/model.safetensors" "$work/killed/model.safetensors"
echo "kill_resume: resumed from step $(grep -o '"resumed_from_step": [0-9]*' "$work/killed/training.json" | grep -o '[0-9]*$'); model bytes identical"
