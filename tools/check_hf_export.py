#!/usr/bin/env python3
"""Perplexity of an exported Hugging Face model directory, computed by transformers itself.

Checks that a directory written by fragile::io::write_hf_model is a genuine HF model: it is
loaded with AutoModelForCausalLM + AutoTokenizer (float32, eager attention, CPU) and scored on
a text exactly as fragile forms its evaluation windows, so the perplexity can be compared with
the one fragile reports for the same model.

Tokenization mirrors fragile (include/fragile/io/text.hpp, io/tokenizer/tokenizer.hpp
encode_documents, data/windows.hpp gptq_eval_windows):
  * text: a `.raw` file is read as WikiText raw ("\\n\\n".join of its rows, whitespace-only rows
    made empty); any other file is used whole. The file must be valid UTF-8.
  * documents: when the text has lines `<|endoftext|>` it is split at them (each document
    stripped of surrounding whitespace, empty ones dropped); otherwise it is one document.
  * each document is encoded on its own without special tokens, preceded by BOS when the
    model's config has a bos_token_id (--bos config, the default; --bos none never adds it),
    and the documents are concatenated into one stream.
  * windows: non-overlapping windows of --seqlen tokens, tail dropped (at most --max-windows);
    every prediction is scored (targets 1 .. seqlen-1 of each window).
PPL = exp(mean next-token NLL over all scored tokens) (equal to GPTQ's mean of window means,
since every window scores seqlen - 1 tokens).

Usage:
  python3 tools/check_hf_export.py DIR --text FILE --seqlen N [--max-windows K]
                                   [--expect-ppl X] [--bos config|none]
Tokenizer caveat (transformers 5): for model_type "qwen2" AutoTokenizer always builds
Qwen2Tokenizer, which replaces tokenizer.json's pre-tokenizer by Qwen2's own split pattern
(single digits, ...). That is right for real Qwen2 tokenizers; a tokenizer.json with another
pre-tokenizer is then tokenized differently from fragile and the token counts printed here differ.

With --expect-ppl the exit status is 1 unless |ppl / X - 1| <= --tolerance (default 1e-4; 2 on
usage errors). Needs torch and transformers (5.x: the config.json layout the writer produces).

--loader gptqmodel loads a packed GPTQ checkpoint (`fragile quantize`'s gptq/) with GPTQModel
instead, on the CPU with its torch kernel, which computes in float16 (so compare with a looser
--tolerance); it first checks that every quantized module got the bits and group size that the
checkpoint's quantization_config (with its `dynamic` overrides) gives it.
"""
import argparse
import math
import sys
from pathlib import Path

SEPARATOR = "<|endoftext|>"
TOLERANCE = 1e-4


def python_lines(text):
    # Universal newlines, each line keeping its "\n" (fragile::io::python_lines).
    # (Text-mode file iteration splits at "\n" only, unlike str.splitlines.)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [l + "\n" for l in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def is_blank(s):
    return all(c in " \t\n\r\v\f" for c in s)


def read_text(path):
    data = Path(path).read_bytes()
    if not data:
        sys.exit(f"text file '{path}' is empty")
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        sys.exit(f"{path}: invalid UTF-8 sequence at byte offset {e.start}")
    if Path(path).suffix == ".raw":
        rows = ["" if is_blank(r) else r for r in python_lines(text)]
        return "\n\n".join(rows)
    return text


def strip_ascii(s):
    return s.strip(" \t\n\r\v\f")


def split_documents(text):
    # fragile::io::split_documents: split at lines equal to the separator ("\r" tolerated).
    docs, current = [], []
    for line in text.split("\n"):
        if (line[:-1] if line.endswith("\r") else line) == SEPARATOR:
            docs.append("\n".join(current))
            current = []
        else:
            current.append(line)
    docs.append("\n".join(current))
    return [d for d in (strip_ascii(d) for d in docs) if d]


def documents_of(text):
    has_separator = any((l[:-1] if l.endswith("\r") else l) == SEPARATOR
                        for l in text.split("\n"))
    return split_documents(text) if has_separator else [text]


def load_gptqmodel(path):
    """The model GPTQModel builds from a packed checkpoint, after checking each module's width."""
    import json
    import torch
    from gptqmodel import BACKEND, GPTQModel

    from check_gptq_export import module_bits  # the checkpoint's width of each module

    qc = json.loads((Path(path) / "config.json").read_text())["quantization_config"]
    m = GPTQModel.load(str(path), device="cpu", backend=BACKEND.TORCH, dtype=torch.float16)
    model = m.model
    checked = 0
    for name, mod in model.named_modules():
        if not hasattr(mod, "qweight"):
            continue
        bits, group = module_bits(qc, name)
        got_group = getattr(mod, "group_size", group)
        if mod.bits != bits or (group > 0 and got_group != group):
            sys.exit(f"{name}: GPTQModel built {mod.bits}-bit group {got_group}, the checkpoint "
                     f"says {bits}-bit group {group}")
        checked += 1
    if not checked:
        sys.exit(f"{path}: GPTQModel built no quantized modules")
    print(f"GPTQModel: {checked} quantized modules with the checkpoint's widths")
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="HF model directory (config.json, model.safetensors, tokenizer)")
    ap.add_argument("--text", required=True, help="evaluation text (UTF-8; .raw = WikiText raw)")
    ap.add_argument("--seqlen", type=int, required=True, help="window length in tokens (>= 2)")
    ap.add_argument("--max-windows", type=int, default=0, help="score at most K windows (0: all)")
    ap.add_argument("--expect-ppl", type=float, default=None,
                    help=f"exit 1 unless |ppl/X - 1| <= {TOLERANCE}")
    ap.add_argument("--bos", choices=["config", "none"], default="config",
                    help="prepend the config's bos_token_id to each document (default) or not")
    ap.add_argument("--batch", type=int, default=8, help="windows per forward pass")
    ap.add_argument("--tolerance", type=float, default=TOLERANCE,
                    help=f"relative tolerance of --expect-ppl (default {TOLERANCE})")
    ap.add_argument("--loader", choices=["transformers", "gptqmodel"], default="transformers",
                    help="load with transformers (float32) or GPTQModel (packed GPTQ, float16)")
    args = ap.parse_args()
    if args.seqlen < 2:
        ap.error("--seqlen must be at least 2 (one input, one target)")
    if args.max_windows < 0:
        ap.error("--max-windows must be non-negative")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_grad_enabled(False)
    if args.loader == "gptqmodel":
        model = load_gptqmodel(args.dir)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.dir, dtype=torch.float32,
                                                     attn_implementation="eager")
    model.to("cpu").eval()
    tokenizer = AutoTokenizer.from_pretrained(args.dir)

    bos = model.config.bos_token_id if args.bos == "config" else None
    if isinstance(bos, list):
        bos = bos[0]
    stream = []
    docs = documents_of(read_text(args.text))
    for doc in docs:
        if bos is not None:
            stream.append(int(bos))
        stream.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
    vocab = model.config.vocab_size
    bad = [t for t in stream if not 0 <= t < vocab]
    if bad:
        sys.exit(f"token id {bad[0]} is outside the model's vocabulary of {vocab}")

    n = len(stream) // args.seqlen
    if n == 0:
        sys.exit(f"{len(stream)} tokens are fewer than one window of {args.seqlen}")
    if args.max_windows:
        n = min(n, args.max_windows)
    if args.seqlen > model.config.max_position_embeddings:
        print(f"warning: seqlen {args.seqlen} exceeds max_position_embeddings "
              f"{model.config.max_position_embeddings}", file=sys.stderr)

    ids = torch.tensor(stream[: n * args.seqlen], dtype=torch.long).view(n, args.seqlen)
    total, count = 0.0, 0
    for b in range(0, n, args.batch):
        batch = ids[b: b + args.batch]
        logits = model(input_ids=batch).logits.float()
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1, :].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
            reduction="none")
        total += float(nll.double().sum())
        count += nll.numel()
    ppl = math.exp(total / count)
    print(f"documents {len(docs)}  tokens {len(stream)}  windows {n} x {args.seqlen}  "
          f"scored {count}  bos {'none' if bos is None else bos}")
    print(f"ppl {ppl:.10g}")
    if args.expect_ppl is not None:
        rel = abs(ppl / args.expect_ppl - 1.0)
        ok = rel <= args.tolerance
        print(f"expected {args.expect_ppl:.10g}  relative difference {rel:.3g}  "
              f"{'OK' if ok else 'MISMATCH'} (tolerance {args.tolerance})")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
