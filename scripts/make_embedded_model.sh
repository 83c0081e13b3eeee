#!/usr/bin/env bash
# Re-creates fragile's embedded default model, examples/models/kjv-tiny: a Llama-family model
# (0.87M parameters) with its own byte-level BPE tokenizer, trained by `fragile train` on the
# King James Bible (Debian's bible-kjv-text), split by whole books (scripts/kjv_corpus.sh):
# train on 64 books, calibrate on Proverbs, evaluate on John. One thread, so that the run is
# bit-reproducible on a machine with the same instruction set and BLAS (about 12 minutes).
#   Usage: scripts/make_embedded_model.sh [OUT] [BUILD]   (defaults: examples/models/kjv-tiny,
#          build/default; needs the built `fragile` and `apt-get install bible-kjv`)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-examples/models/kjv-tiny}
build=${2:-build/default}
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
scripts/kjv_corpus.sh "$corpus"
rm -rf "$out"
"$build/cli/fragile" train --threads 1 \
  --text "$corpus/train.txt" --eval "$corpus/eval.txt" --out "$out" \
  --vocab-size 1024 --arch llama --hidden 128 --layers 4 --heads 4 --kv-heads 2 \
  --intermediate 352 --seqlen 128 --batch 16 --steps 3000 --lr 3e-3 --min-lr 3e-4 \
  --warmup 100 --weight-decay 0.1 --clip 1.0 --eval-every 250 --seed 0
cp "$corpus/calib.txt" "$out/calib.txt"
cp "$corpus/eval.txt" "$out/eval.txt"
sha256sum "$out/model.safetensors" "$out/tokenizer.json" | sed "s|$out/||" > "$out/SHA256SUMS"
cat "$out/SHA256SUMS"
