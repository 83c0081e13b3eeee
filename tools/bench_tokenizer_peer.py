#!/usr/bin/env python3
"""Peer benchmark: Hugging Face `tokenizers` encoding WikiText-2 raw test text with the GPT-2 and
Qwen2 byte-level BPE built from the same vocab.json/merges.txt and pre-tokenizer as fragile's
bench_tokenizer, with 1 thread (RAYON_NUM_THREADS=1) and with the default thread pool.

With --bench PATH it first runs fragile's bench_tokenizer binary, checks that both produce
identical ids (count and FNV-1a hash of the int32 ids), and prints the speed ratio.

  python3 tools/bench_tokenizer_peer.py --data ../shared/data --bench build/rel/bench/bench_tokenizer
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def fnv1a(ids):
    h = 1469598103934665603
    for i in ids:
        for b in int(i).to_bytes(4, "little", signed=True):
            h ^= b
            h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def build(name, folder, nfc):
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    tok = Tokenizer(BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
    if name == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        if nfc:
            tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    return tok


def measure(tok, text, min_time):
    """Tokens per second of CPU time (as Google Benchmark's rate counters) and of wall time."""
    ids = tok.encode(text).ids  # warm-up (fills the BPE cache, as fragile's warm benchmark)
    n, c0, t0 = 0, time.process_time(), time.perf_counter()
    while True:
        ids = tok.encode(text).ids
        n += 1
        dc, dt = time.process_time() - c0, time.perf_counter() - t0
        if dc >= min_time:
            return ids, len(ids) * n / dc, len(ids) * n / dt


def child(args):
    """One measurement in a fresh process (RAYON_NUM_THREADS is read once per process)."""
    text = Path(args.data, "text/wikitext-2-raw/wiki.test.raw").read_text(encoding="utf-8")
    out = {}
    for name in ("gpt2", "qwen2"):
        tok = build(name, Path(args.data, "tokenizers", name), not args.no_nfc)
        ids, rate, wall_rate = measure(tok, text, args.min_time)
        lines = [l for l in text.split("\n")]
        c0, t0 = time.process_time(), time.perf_counter()
        batch = tok.encode_batch(lines)
        n_batch = sum(len(e.ids) for e in batch)
        batch_rate = n_batch / (time.perf_counter() - t0)
        batch_cpu_rate = n_batch / (time.process_time() - c0)  # all threads' CPU time
        out[name] = {"ids": len(ids), "fnv": fnv1a(ids), "tokens_per_s": rate, "wall_tokens_per_s": wall_rate,
                     "batch_lines_tokens_per_s": batch_rate, "batch_lines_cpu_tokens_per_s": batch_cpu_rate,
                     "batch_lines_ids": n_batch}
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    ap.add_argument("--bench", help="fragile's bench_tokenizer binary, run first for the comparison")
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--no-nfc", action="store_true", help="omit Qwen2's NFC normalizer")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    ours = {}
    if args.bench:
        res = subprocess.run([args.bench, "--benchmark_format=json", "--benchmark_filter=wikitext2/"],
                             check=True, capture_output=True, text=True)
        for b in json.loads(res.stdout)["benchmarks"]:
            name = b["name"].split("/")[1].split("_")[0]
            label = dict(kv.split("=") for kv in b["label"].split())
            ours[name] = {"ids": int(label["ids"]), "fnv": label["fnv"], "tokens_per_s": b["tokens/s"]}
            print(f"fragile    {name:6s}: encode(text) {b['tokens/s']:12,.0f} tokens/s CPU "
                  f"({label['ids']} ids, fnv {label['fnv']})")

    peer = {}
    for threads in ("1", None):
        env = dict(os.environ)
        if threads:
            env["RAYON_NUM_THREADS"] = threads
        else:
            env.pop("RAYON_NUM_THREADS", None)
        cmd = [sys.executable, __file__, "--child", "--data", args.data, "--min-time", str(args.min_time)]
        if args.no_nfc:
            cmd.append("--no-nfc")
        res = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        tag = f"RAYON_NUM_THREADS={threads}" if threads else f"default threads ({os.cpu_count()} cpus)"
        peer[tag] = json.loads(res.stdout)
        for name, r in peer[tag].items():
            print(f"tokenizers {name:6s} [{tag}]: encode(text) {r['tokens_per_s']:12,.0f} tokens/s CPU "
                  f"({r['wall_tokens_per_s']:,.0f} wall), encode_batch(lines) "
                  f"{r['batch_lines_tokens_per_s']:,.0f} tokens/s wall "
                  f"({r['batch_lines_cpu_tokens_per_s']:,.0f} per CPU second, {r['batch_lines_ids']} ids)  "
                  f"({r['ids']} ids, fnv {r['fnv']})")

    ok = True
    for name, o in ours.items():
        for tag, r in peer.items():
            same = o["ids"] == r[name]["ids"] and o["fnv"] == r[name]["fnv"]
            ok &= same
            print(f"{name:6s} vs tokenizers [{tag}]: ids {'identical' if same else 'DIFFER'}, "
                  f"fragile/tokenizers encode(text) speed ratio (CPU time) "
                  f"{o['tokens_per_s'] / r[name]['tokens_per_s']:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
