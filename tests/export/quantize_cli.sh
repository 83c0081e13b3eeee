#!/usr/bin/env bash
# `fragile quantize` end to end on the embedded model: a plan from `fragile allocate`, its four
# exports (byte-identical when run twice), the same PPL from quantize, eval --plan and eval --checkpoint of the fake-quant
# folder; bad plans are one-line errors naming the input; an existing --out is refused without
# --force; a SIGKILLed export leaves nothing under the target name.
# Usage: quantize_cli.sh <fragile> <scratch dir>
set -uo pipefail
fragile=$1 work=$2
rm -rf "$work" && mkdir -p "$work"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
small=(--calib-windows 16 --eval-tokens 4096 --quiet)
EXPECT_TIMEOUT=120
source "$(dirname "$0")/../support/cli_expect.sh"
ppl_of() { grep -o '"ppl": [0-9.e+-]*' "$1" | head -1 | cut -d' ' -f2; }

"$fragile" allocate --bits 3 --group-size 32 --budget 3.5 "${small[@]}" --out "$work/alloc" ||
  { echo "FAIL: allocate"; exit 1; }
plan=$work/alloc/plan.json
"$fragile" quantize --plan "$plan" "${small[@]}" --out "$work/q" || fail "quantize"
for f in fake-quant/model.safetensors fake-quant/config.json fake-quant/tokenizer.json \
         gptq/model.safetensors gptq/quantize_config.json llama.cpp/tensor-types.txt \
         llama.cpp/quantize-args.txt llama.cpp/recipe.json imatrix.gguf imatrix.windows.json \
         results.json; do
  [ -s "$work/q/$f" ] || fail "quantize wrote no $f"
done
[ "$(grep -c . "$work/q/llama.cpp/tensor-types.txt")" = 28 ] || fail "tensor-types.txt: not 28 lines"
grep -q '^blk\\\.0\\\.attn_q\\\.weight=q[0-9]_[0K]$' "$work/q/llama.cpp/tensor-types.txt" ||
  fail "tensor-types.txt has no blk\\.0\\.attn_q\\.weight=<type> line"

# The same bytes from the same plan.
"$fragile" quantize --plan "$plan" "${small[@]}" --out "$work/q_again" || fail "quantize again"
for f in fake-quant/model.safetensors fake-quant/config.json gptq/model.safetensors \
         gptq/config.json gptq/quantize_config.json llama.cpp/tensor-types.txt \
         llama.cpp/quantize-args.txt llama.cpp/recipe.json imatrix.gguf imatrix.windows.json; do
  cmp -s "$work/q/$f" "$work/q_again/$f" || fail "$f differs between two runs of the same plan"
done

# One PPL for the plan, whichever way it is evaluated.
"$fragile" eval --plan "$plan" "${small[@]}" --out "$work/e1" || fail "eval --plan"
"$fragile" eval --checkpoint "$work/q/fake-quant" "${small[@]}" --out "$work/e2" || fail "eval --checkpoint"
q=$(ppl_of "$work/q/results.json")
p=$(ppl_of "$work/e1/results.json")
c=$(ppl_of "$work/e2/results.json")
[ -n "$q" ] || fail "no PPL in quantize's results.json"
[ "$q" = "$p" ] || fail "quantize PPL $q != eval --plan PPL $p"
[ "$q" = "$c" ] || fail "quantize PPL $q != eval --checkpoint fake-quant PPL $c"
echo "ok: PPL $q from quantize, eval --plan and eval --checkpoint"

# An existing --out: refused, then replaced with --force.
expect 1 "--out '$work/q' already exists (add --force to replace it)" -- \
  quantize --plan "$plan" "${small[@]}" --out "$work/q"
"$fragile" quantize --plan "$plan" "${small[@]}" --format llama-cpp --force --out "$work/q" ||
  fail "quantize --force"
[ -e "$work/q/gptq" ] && fail "--force kept the old folder's gptq/"
[ -s "$work/q/llama.cpp/recipe.json" ] || fail "--force wrote no recipe"

# Bad plans.
head -c 300 "$plan" > "$work/truncated.json"
expect 1 "plan '$work/truncated.json': not valid JSON" -- \
  quantize --plan "$work/truncated.json" "${small[@]}" --out "$work/b1"
sed 's/"bits": 3,/"bits": "3",/' "$plan" > "$work/types.json"
expect 1 "plan '$work/types.json': layers[" -- quantize --plan "$work/types.json" "${small[@]}" --out "$work/b2"
sed 's/"weights_xxh3": "[0-9a-f]*"/"weights_xxh3": "0123456789abcdef"/' "$plan" > "$work/other.json"
expect 1 "was made for another model" -- quantize --plan "$work/other.json" "${small[@]}" --out "$work/b3"
expect 1 "--ggml-types" -- quantize --plan "$plan" --ggml-types 3=q9_z "${small[@]}" --out "$work/b4"
for b in b1 b2 b3 b4; do [ -e "$work/$b" ] && fail "a failed quantize left $work/$b"; done

# SIGKILL mid-export: nothing under the target name; the next export clears the leftovers.
# (all 128 calibration windows and every evaluation token: a run of several seconds)
"$fragile" quantize --plan "$plan" --quiet --out "$work/k" &
pid=$!
for _ in $(seq 200); do [ -d "$work/.k.partial-$pid" ] && break; sleep 0.05; done
sleep 1
kill -9 "$pid" 2>/dev/null || fail "quantize finished before it could be killed"
wait "$pid" 2>/dev/null
[ -e "$work/k" ] && fail "a killed quantize left $work/k"
[ -d "$work/.k.partial-$pid" ] || fail "the killed quantize had no staging folder"
"$fragile" quantize --plan "$plan" "${small[@]}" --format llama-cpp --out "$work/k" || fail "rerun after kill"
ls -a "$work" | grep -q '^\.k\.partial-' && fail "the rerun left the killed run's staging folder"
[ "$fails" = 0 ] || { echo "$fails case(s) failed"; exit 1; }
echo "all quantize cases passed"
