#!/usr/bin/env python3
"""Reference sensitivity metrics of stories260K, computed with PyTorch autograd in float64.

Independent of fragile's runtime: the forward is tools/stories260k_reference.py's llama2.c port,
the output gradients come from autograd (retain_grad on every linear output), and RTN is GPTQ's
find_params / quantize (asymmetric min-max, round half to even) written out in torch, run in
float32 on the float32 checkpoint like GPTQ's quant.py (a float64 grid would move codes that sit
on rounding ties at 8 bits).

Windows: the first WINDOWS x SEQLEN tokens of tests/fixtures/stories260k/reference.json. Labels
are the data's next tokens (deterministic); L_n = mean token cross-entropy of window n, so
g = dL_n/dy (DESIGN.md). For every linear layer and bit width, with dW = Q(W) - W, dy = dW x:
  fisher_trace = E_t ||g||^2, D_l = 1/2 E_t (g.dy)^2, D_l_diag = 1/2 E_t sum_i (g_i dy_i)^2,
  feo = E (g.dy)^2 / (E||g||^2 E||dy||^2), weight_mse = mean dW^2,
  hessian_diag = 1/2 sum dW^2 E_all-positions[x_j^2], fisher_diag = 1/2 sum dW^2 E_n (dL_n/dW)^2
(E_t over scored positions t < SEQLEN-1).

Writes tests/fixtures/sensitivity/stories260k_metrics.json.
With --bench: times the same computation in float32 (forward only vs forward + backward + all
metrics at the 4 bit widths) on BENCH_WINDOWS x BENCH_SEQLEN tokens, torch's threads as set by
OMP_NUM_THREADS: the peer of bench_sensitivity's BM_stories_* rows.
Usage: python3 tools/sensitivity_reference.py [data_dir] [--bench]
"""
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stories260k_reference import read_checkpoint, rmsnorm  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
args = [a for a in sys.argv[1:] if not a.startswith("--")]
DATA = Path(args[0]) if args else ROOT.parent / "shared" / "data"
OUT = ROOT / "tests" / "fixtures" / "sensitivity" / "stories260k_metrics.json"
WINDOWS, SEQLEN, GROUP = 4, 64, 32
BITS = [2, 3, 4, 8]
KINDS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
KEYS = {"q_proj": "wq", "k_proj": "wk", "v_proj": "wv", "o_proj": "wo",
        "gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}


def rtn(w, bits, group):
    """GPTQ's find_params + quantize per group of `group` input columns (asymmetric)."""
    maxq = 2 ** bits - 1
    out = torch.empty_like(w)
    for c0 in range(0, w.shape[1], group):
        x = w[:, c0:c0 + group]
        xmin = torch.minimum(x.min(1).values, torch.zeros(1, dtype=x.dtype))
        xmax = torch.maximum(x.max(1).values, torch.zeros(1, dtype=x.dtype))
        both = (xmin == 0) & (xmax == 0)
        xmin[both], xmax[both] = -1, 1
        scale = (xmax - xmin) / maxq
        zero = torch.round(-xmin / scale)
        q = torch.clamp(torch.round(x / scale[:, None]) + zero[:, None], 0, maxq)
        out[:, c0:c0 + group] = scale[:, None] * (q - zero[:, None])
    return out


def forward_capture(cfg, w, ids):
    """Logits (B, T, V) and {(layer, kind): (x, y)} with y retaining its gradient."""
    B, T = ids.shape
    dim, nh, nkv = cfg["dim"], cfg["n_heads"], cfg["n_kv"]
    hs = dim // nh
    x = w["emb"][ids]
    freqs = 1.0 / (10000.0 ** (torch.arange(0, hs, 2, dtype=x.dtype) / hs))
    ang = torch.outer(torch.arange(T, dtype=x.dtype), freqs)
    cos, sin = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]

    def rope(t):
        a, b = t[..., 0::2], t[..., 1::2]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)

    caps = {}

    def lin(l, kind, inp):
        y = inp @ w[KEYS[kind]][l].T
        if y.requires_grad:
            y.retain_grad()
        caps[(l, kind)] = (inp, y)
        return y

    mask = torch.full((T, T), float("-inf"), dtype=x.dtype).triu(1)
    for l in range(cfg["n_layers"]):
        h = rmsnorm(x, w["rms_att"][l])
        q = rope(lin(l, "q_proj", h).view(B, T, nh, hs))
        k = rope(lin(l, "k_proj", h).view(B, T, nkv, hs))
        v = lin(l, "v_proj", h).view(B, T, nkv, hs)
        rep = nh // nkv
        k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
        att = torch.softmax(torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(hs) + mask, dim=-1)
        o = torch.einsum("bhts,bshd->bthd", att, v).reshape(B, T, nh * hs)
        x = x + lin(l, "o_proj", o)
        h = rmsnorm(x, w["rms_ffn"][l])
        x = x + lin(l, "down_proj", torch.nn.functional.silu(lin(l, "gate_proj", h)) * lin(l, "up_proj", h))
    return rmsnorm(x, w["rms_final"]) @ w["cls"].T, caps


def metrics(cfg, w, ids, bits_list):
    B, T = ids.shape
    logits, caps = forward_capture(cfg, w, ids)
    lp = torch.log_softmax(logits[:, :-1], dim=-1)
    nll = -lp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
    nll.mean(dim=1).sum().backward()                   # each window's own mean loss
    S = T - 1
    layers = []
    for l in range(cfg["n_layers"]):
        for kind in KINDS:
            x, y = caps[(l, kind)]
            x, g = x.detach(), y.grad.detach()
            W = w[KEYS[kind]][l]
            xs, gs = x[:, :S].reshape(-1, x.shape[-1]), g[:, :S].reshape(-1, g.shape[-1])
            n = xs.shape[0]
            g2 = (gs * gs).sum() / n
            power = (x.reshape(-1, x.shape[-1]) ** 2).mean(0)          # all positions
            wg = torch.einsum("bto,bti->boi", g, x)                     # dL_n/dW per window
            fsq = (wg ** 2).mean(0)
            per_bits = []
            for b in bits_list:
                dw = rtn(W.float(), b, GROUP).to(W.dtype) - W  # grid in float32, as GPTQ's quant.py
                dy = xs @ dw.T
                s = (gs * dy).sum(-1)
                d = 0.5 * (s * s).mean()
                diag = 0.5 * ((gs * dy) ** 2).sum(-1).mean()
                dy2 = (dy * dy).sum(-1).mean()
                per_bits.append({"bits": b, "D_l": float(d), "D_l_diag": float(diag),
                                 "feo": float((s * s).mean() / (g2 * dy2)),
                                 "weight_mse": float((dw * dw).mean()),
                                 "hessian_diag": float(0.5 * (dw * dw * power[None, :]).sum()),
                                 "fisher_diag": float(0.5 * (dw * dw * fsq).sum())})
            layers.append({"name": f"model.layers.{l}.{'self_attn' if kind.endswith(('q_proj', 'k_proj', 'v_proj', 'o_proj')) else 'mlp'}.{kind}",
                           "fisher_trace": float(g2), "options": per_bits})
    return float(nll.detach().mean(dim=1).mean()), layers


def bench(cfg, w32):
    torch.manual_seed(0)
    ids = torch.randint(0, cfg["vocab"], (8, 256))

    def fwd():
        with torch.no_grad():
            logits, _ = forward_capture(cfg, w32, ids)
            torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])

    def full():
        metrics(cfg, w32, ids, BITS)

    def timed(f, reps=5):
        f()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    # Gradients reach the linear outputs through the embedding: let the activations carry grad.
    w32["emb"].requires_grad_(True)
    t_fwd, t_full = timed(fwd), timed(full)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "tokens": 8 * 256, "forward_ms": 1e3 * t_fwd, "pass_all_ms": 1e3 * t_full,
                      "ratio": t_full / t_fwd}))


def main():
    cfg, w = read_checkpoint(DATA / "models" / "stories260K" / "stories260K.bin")
    if "--bench" in sys.argv:
        bench(cfg, {k: v.float() for k, v in w.items()})
        return
    ref = json.loads((ROOT / "tests" / "fixtures" / "stories260k" / "reference.json").read_text())
    ids = torch.tensor(ref["tokens"][:WINDOWS * SEQLEN]).view(WINDOWS, SEQLEN)
    w["emb"].requires_grad_(True)  # so every activation (and y) carries a gradient
    loss, layers = metrics(cfg, w, ids, BITS)
    OUT.write_text(json.dumps({"model": "stories260K.bin", "windows": WINDOWS, "seqlen": SEQLEN,
                               "group_size": GROUP, "symmetric": False, "bits": BITS,
                               "labels": "data", "mean_window_loss": loss,
                               "tokens": ref["tokens"][:WINDOWS * SEQLEN], "layers": layers},
                              indent=1) + "\n")
    print(f"wrote {OUT} ({len(layers)} layers, mean window loss {loss:.6f})")


if __name__ == "__main__":
    main()
