#!/usr/bin/env python3
"""Checks fragile's byte-level BPE trainer (include/fragile/io/tokenizer/bpe_trainer.hpp) against
Hugging Face `tokenizers` (pip install tokenizers).

1. Ids: loads the tokenizer.json fragile wrote with tokenizers.Tokenizer.from_file, encodes the
   held-out text and compares with fragile's ids (one per line) exactly.
2. Merges (--train-hf): trains HF's own BpeTrainer (ByteLevel pre-tokenizer without prefix
   space, initial_alphabet=ByteLevel.alphabet(), same vocab size, min_frequency and special
   tokens) on the same training text, fed as one sequence as train_tokenizer feeds it, and
   reports how many merges agree and where the first difference is, and whether fragile's
   tokenizer.json is byte-identical to the one HF saves for its own result.

Either give the files:
  tools/check_bpe_trainer.py --tokenizer tok.json --ids ids.txt --text held_out.txt \
      [--train-hf --train-text train.txt --min-frequency 2]
or let the script do everything (--run): build the KJV text (`bible` from Debian's bible-kjv,
or --corpus FILE), hold out one book (--hold-out, default Revelation), run fragile's
examples/train_tokenizer on the rest and check as above:
  tools/check_bpe_trainer.py --run --train-hf [--vocab-size 2048] [--work /tmp/bpe_check]
Exit status 0 when every requested check passes.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def kjv_text():
    # -l sets the line width: long enough that no verse is wrapped.
    out = subprocess.run(["bible", "-l100000", "Gen1:1-Rev22:21"], stdin=subprocess.DEVNULL,
                         capture_output=True, check=True)
    return out.stdout.decode("utf-8")


def split_book(text, book):
    """(rest, held_out): the lines of `book` (from its "Book N" chapter headings on) apart."""
    heading = re.compile(r"^(\S.*?) \d+$")
    keep, held, current = [], [], None
    for line in text.splitlines(keepends=True):
        m = heading.match(line.rstrip("\n"))
        if m:
            current = m.group(1)
        (held if current == book else keep).append(line)
    if not held:
        sys.exit(f"error: no book '{book}' in the corpus (chapter headings look like 'Genesis 1')")
    return "".join(keep), "".join(held)


def read_text(path):
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def check_ids(tokenizer_json, ids_path, text_path):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tokenizer_json)
    text = read_text(text_path)
    with open(ids_path) as f:
        fragile_ids = [int(line) for line in f if line.strip()]
    hf_ids = tok.encode(text, add_special_tokens=False).ids
    same = hf_ids == fragile_ids
    print(f"ids: {len(text.encode('utf-8'))} bytes held out -> HF {len(hf_ids)} tokens, "
          f"fragile {len(fragile_ids)}: {'IDENTICAL' if same else 'DIFFERENT'}")
    if not same:
        n = next((i for i, (a, b) in enumerate(zip(hf_ids, fragile_ids)) if a != b),
                 min(len(hf_ids), len(fragile_ids)))
        print(f"  first difference at token {n}: HF {hf_ids[n:n + 8]} fragile {fragile_ids[n:n + 8]}")
    if tok.decode(hf_ids, skip_special_tokens=False) != text:
        print("  note: HF decode(encode(text)) != text")
    return same


def train_hf(train_text, vocab_size, min_frequency, specials):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    t0 = time.perf_counter()
    tok.train_from_iterator([train_text], trainer=trainer)
    print(f"HF BpeTrainer: {time.perf_counter() - t0:.2f} s")
    return tok.to_str(pretty=True)


def check_merges(tokenizer_json, train_text_path, min_frequency):
    with open(tokenizer_json, encoding="utf-8") as f:
        ours_text = f.read()
    ours = json.loads(ours_text)
    model = ours["model"]
    specials = [t["content"] for t in sorted(ours["added_tokens"], key=lambda t: t["id"])]
    hf_text = train_hf(read_text(train_text_path), len(model["vocab"]), min_frequency, specials)
    hf = json.loads(hf_text)["model"]
    norm = lambda ms: [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in ms]
    a, b = norm(model["merges"]), norm(hf["merges"])
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    agree = sum(x == y for x, y in zip(a, b))
    print(f"merges: fragile {len(a)}, HF {len(b)}; same rank {agree}; "
          f"common pairs {len(set(a) & set(b))}")
    if first is not None:
        print(f"  first difference at rank {first}: fragile {a[first]} HF {b[first]}")
    elif len(a) != len(b):
        print(f"  one list is a prefix of the other (first {min(len(a), len(b))} equal)")
    vocab_same = model["vocab"] == hf["vocab"]
    print(f"vocab (token -> id): {'IDENTICAL' if vocab_same else 'DIFFERENT'}")
    # Informational: with the GPT-2 preset and no prefix space the files match byte for byte.
    print(f"tokenizer.json vs HF's save (pretty): "
          f"{'BYTE-IDENTICAL' if ours_text == hf_text else 'differs in bytes'}")
    return first is None and len(a) == len(b) and vocab_same


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", help="tokenizer.json written by fragile")
    ap.add_argument("--ids", help="fragile's ids of --text, one per line")
    ap.add_argument("--text", help="held-out text that --ids encodes")
    ap.add_argument("--train-hf", action="store_true", help="also train HF's BpeTrainer and compare merges")
    ap.add_argument("--train-text", help="training text (for --train-hf)")
    ap.add_argument("--min-frequency", type=int, default=2)
    ap.add_argument("--run", action="store_true", help="build the KJV split, train with fragile, check")
    ap.add_argument("--corpus", help="with --run: corpus file instead of `bible` KJV output")
    ap.add_argument("--hold-out", default="Revelation", help="with --run: book held out")
    ap.add_argument("--vocab-size", type=int, default=2048)
    ap.add_argument("--special", action="append", default=None, help="special token (repeatable)")
    ap.add_argument("--fragile-bin", default=os.path.join(ROOT, "build/default/examples/train_tokenizer"))
    ap.add_argument("--work", default="/tmp/fragile_bpe_check", help="with --run: output folder")
    args = ap.parse_args()

    if args.run:
        os.makedirs(args.work, exist_ok=True)
        corpus = read_text(args.corpus) if args.corpus else kjv_text()
        train, held = split_book(corpus, args.hold_out)
        args.train_text = os.path.join(args.work, "train.txt")
        args.text = os.path.join(args.work, "held_out.txt")
        args.tokenizer = os.path.join(args.work, "tokenizer.json")
        args.ids = os.path.join(args.work, "ids.txt")
        for path, s in ((args.train_text, train), (args.text, held)):
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(s)
        print(f"corpus {len(corpus.encode())} bytes: train {len(train.encode())}, "
              f"held out ({args.hold_out}) {len(held.encode())}")
        specials = args.special if args.special is not None else ["<|endoftext|>"]
        cmd = [args.fragile_bin, "--text", args.train_text, "--vocab-size", str(args.vocab_size),
               "--min-frequency", str(args.min_frequency), "--out", args.tokenizer,
               "--encode", args.text, "--ids-out", args.ids]
        for s in specials:
            cmd += ["--special", s]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"fragile train_tokenizer: {time.perf_counter() - t0:.2f} s wall")
    if not (args.tokenizer and args.ids and args.text):
        ap.error("give --tokenizer, --ids and --text, or --run")
    ok = check_ids(args.tokenizer, args.ids, args.text)
    if args.train_hf:
        if not args.train_text:
            ap.error("--train-hf needs --train-text (or --run)")
        ok = check_merges(args.tokenizer, args.train_text, args.min_frequency) and ok
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
