#!/usr/bin/env python3
"""Independent reference perplexity of stories260K (llama2.c) on TinyStories, in PyTorch.

Written from the llama2.c model definition (model.py / run.c): RMSNorm (eps 1e-5), RoPE on
adjacent pairs (x[2i], x[2i+1]) with theta 10000, grouped-query attention (repeat_kv), SwiGLU
w2(silu(w1 x) * w3 x), final norm, classifier shared with the embedding. The forward runs in
float64 on the checkpoint's float32 weights. Tokens come from llama2.c's encode() re-implemented
below (dummy " " prefix, code points with byte fallback, greedy highest-score pair merges).

Text: the stories of data/text/tinystories/valid_0001-0500.txt (split at `<|endoftext|>` lines,
stripped, empty dropped), each encoded with BOS, concatenated, cut to TOKENS tokens.
Protocols (DESIGN.md): GPTQ (windows of SEQLEN, PPL = exp(mean of window mean NLL)) and
llama.cpp (windows of SEQLEN, first token := BOS, targets SEQLEN/2+1 .. SEQLEN-1,
PPL = exp(total NLL / count)).

Writes tests/fixtures/stories260k/reference.json (the token ids and both perplexities).
Usage: python3 tools/stories260k_reference.py [data_dir]   (default ../shared/data)
"""
import hashlib
import json
import math
import struct
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data"
OUT = ROOT / "tests" / "fixtures" / "stories260k" / "reference.json"
SEQLEN = 256
TOKENS = 16 * SEQLEN
BOS = 1


def read_checkpoint(path):
    raw = path.read_bytes()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    f = torch.frombuffer(bytearray(raw[28:]), dtype=torch.float32)
    hs = dim // n_heads
    off = 0

    def take(*shape):
        nonlocal off
        n = math.prod(shape)
        t = f[off:off + n].reshape(*shape).clone()
        off += n
        return t

    w = {"emb": take(vocab, dim), "rms_att": take(n_layers, dim),
         "wq": take(n_layers, n_heads * hs, dim), "wk": take(n_layers, n_kv * hs, dim),
         "wv": take(n_layers, n_kv * hs, dim), "wo": take(n_layers, dim, n_heads * hs),
         "rms_ffn": take(n_layers, dim), "w1": take(n_layers, hidden, dim),
         "w2": take(n_layers, dim, hidden), "w3": take(n_layers, hidden, dim),
         "rms_final": take(dim)}
    off += seq_len * hs  # freq_cis_real (legacy, unused)
    off += seq_len * hs  # freq_cis_imag
    w["cls"] = w["emb"] if shared else take(vocab, dim)
    cfg = dict(dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv=n_kv,
               vocab=vocab, seq_len=seq_len)
    return cfg, {k: v.double() for k, v in w.items()}


def read_tokenizer(path, vocab_size):
    raw = path.read_bytes()
    (max_len,) = struct.unpack("<i", raw[:4])
    pos = 4
    pieces, scores = [], []
    for _ in range(vocab_size):
        score, n = struct.unpack("<fi", raw[pos:pos + 8])
        pos += 8
        pieces.append(raw[pos:pos + n])
        scores.append(score)
        pos += n
    return pieces, scores


def encode(text, pieces, scores, bos=True):
    lookup = {p: i for i, p in enumerate(pieces)}
    toks = [BOS] if bos else []
    if text:
        toks.append(lookup[b" "])
    data = text.encode("utf-8")
    i = 0
    while i < len(data):
        j = i + 1
        while j < len(data) and (data[j] & 0xC0) == 0x80 and j - i < 4:
            j += 1
        cp = data[i:j]
        if cp in lookup:
            toks.append(lookup[cp])
        else:
            toks.extend(b + 3 for b in cp)
        i = j
    while True:
        best, best_id, best_i = -1e10, -1, -1
        for k in range(len(toks) - 1):
            merged = pieces[toks[k]] + pieces[toks[k + 1]]
            m = lookup.get(merged)
            if m is not None and scores[m] > best:
                best, best_id, best_i = scores[m], m, k
        if best_i < 0:
            break
        toks[best_i:best_i + 2] = [best_id]
    return toks


def rmsnorm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def forward(cfg, w, ids):
    """Logits (T, V) for one window of ids, float64."""
    T = len(ids)
    dim, nh, nkv = cfg["dim"], cfg["n_heads"], cfg["n_kv"]
    hs = dim // nh
    x = w["emb"][torch.tensor(ids)]
    freqs = 1.0 / (10000.0 ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs))
    ang = torch.outer(torch.arange(T, dtype=torch.float64), freqs)  # (T, hs/2)
    cos, sin = torch.cos(ang), torch.sin(ang)

    def rope(t):  # (T, H, hs): rotate adjacent pairs
        a, b = t[..., 0::2], t[..., 1::2]
        c, s = cos[:, None, :], sin[:, None, :]
        out = torch.empty_like(t)
        out[..., 0::2] = a * c - b * s
        out[..., 1::2] = a * s + b * c
        return out

    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(cfg["n_layers"]):
        h = rmsnorm(x, w["rms_att"][l])
        q = rope((h @ w["wq"][l].T).view(T, nh, hs))
        k = rope((h @ w["wk"][l].T).view(T, nkv, hs))
        v = (h @ w["wv"][l].T).view(T, nkv, hs)
        rep = nh // nkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hs) + mask
        att = torch.softmax(att, dim=-1)
        o = torch.einsum("hts,shd->thd", att, v).reshape(T, nh * hs)
        x = x + o @ w["wo"][l].T
        h = rmsnorm(x, w["rms_ffn"][l])
        x = x + (torch.nn.functional.silu(h @ w["w1"][l].T) * (h @ w["w3"][l].T)) @ w["w2"][l].T
    return rmsnorm(x, w["rms_final"]) @ w["cls"].T


def nll(cfg, w, ids):
    logits = forward(cfg, w, ids)
    lp = torch.log_softmax(logits, dim=-1)
    return [-float(lp[t, ids[t + 1]]) for t in range(len(ids) - 1)]  # predicts ids[t+1]


def main():
    model_path = DATA / "models" / "stories260K" / "stories260K.bin"
    cfg, w = read_checkpoint(model_path)
    pieces, scores = read_tokenizer(DATA / "models" / "stories260K" / "tok512.bin", cfg["vocab"])
    text = (DATA / "text" / "tinystories" / "valid_0001-0500.txt").read_text(encoding="utf-8")
    stories, cur = [], []
    for line in text.split("\n"):
        if line.rstrip("\r") == "<|endoftext|>":
            stories.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    stories.append("\n".join(cur))
    stories = [s.strip(" \t\n\r\f\v") for s in stories]
    stories = [s for s in stories if s]
    stream, used = [], 0
    for s in stories:
        if len(stream) >= TOKENS:
            break
        stream += encode(s, pieces, scores, bos=True)
        used += 1
    stream = stream[:TOKENS]

    n = TOKENS // SEQLEN
    window_means = []
    for i in range(n):
        v = nll(cfg, w, stream[i * SEQLEN:(i + 1) * SEQLEN])
        window_means.append(sum(v) / len(v))
    gptq = math.exp(sum(window_means) / n)

    first = SEQLEN // 2
    total, count = 0.0, 0
    for i in range(n):
        ids = list(stream[i * SEQLEN:(i + 1) * SEQLEN])
        ids[0] = BOS
        v = nll(cfg, w, ids)
        total += sum(v[first:])  # v[t] scores ids[t+1]: targets first+1 .. SEQLEN-1
        count += len(v[first:])
    llamacpp = math.exp(total / count)

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "model": "stories260K.bin", "model_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
        "text": "text/tinystories/valid_0001-0500.txt", "stories_encoded": used,
        "seqlen": SEQLEN, "windows": n, "bos": BOS,
        "gptq_ppl": gptq, "llamacpp_ppl": llamacpp, "llamacpp_scored": count,
        "window_mean_nll": window_means, "tokens": stream,
    }) + "\n")
    print(f"stories {used} tokens {len(stream)} gptq ppl {gptq:.6f} llama.cpp ppl {llamacpp:.6f}")


if __name__ == "__main__":
    main()
