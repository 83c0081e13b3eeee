#!/usr/bin/env python3
"""Writes GPTQ and RTN reference fixtures for tests/quant from the public GPTQ implementation.

The reference code is NOT part of fragile: clone it next to the project and pass its folder,
    git clone https://github.com/IST-DASLab/gptq /tmp/gptq-ref   # tested at 2d65066e
    python3 tools/gptq_reference_fixtures.py --reference /tmp/gptq-ref --out tests/fixtures/gptq
This imports its gptq.py (GPTQ.add_batch / fasterquant) and quant.py (Quantizer.find_params,
quantize), runs them on fixed seeded random W and X, and stores .npy files (f32, C order) plus
manifest.json: inputs, the reference's dequantized weight Q and, for GPTQ, its printed loss.
Activations go to add_batch as (tokens, 1, in) so H = 2/N sum_t x_t x_t^T with N = tokens, the
normalization fragile's HessianAccumulator uses.
"""
import argparse
import contextlib
import io
import json
import os
import sys

import numpy as np
import torch


def load_reference(path):
    sys.path.insert(0, os.path.abspath(path))
    # gptq.py synchronizes CUDA unconditionally; on a CPU-only run that call must be a no-op.
    torch.cuda.synchronize = lambda *a, **k: None
    with contextlib.redirect_stdout(io.StringIO()):
        import gptq as ref_gptq  # noqa: E402
        import quant as ref_quant  # noqa: E402
    return ref_gptq, ref_quant


def correlated_activations(rng, tokens, cols, dead):
    """Correlated features with a few outlier channels, like LLM layer inputs."""
    z = rng.standard_normal((tokens, cols))
    mix = np.eye(cols) + 0.3 * rng.standard_normal((cols, cols)) / np.sqrt(cols)
    x = z @ mix
    outliers = rng.choice(cols, size=max(1, cols // 32), replace=False)
    x[:, outliers] *= 8.0
    for d in dead:
        x[:, d] = 0.0
    return x.astype(np.float32)


def weights(rng, rows, cols, zero_rows=()):
    w = 0.02 * rng.standard_normal((rows, cols))
    w[rng.random((rows, cols)) < 0.01] *= 6.0  # a few large weights
    for r in zero_rows:
        w[r, :] = 0.0
    return w.astype(np.float32)


def run_gptq(ref_gptq, ref_quant, w, x, bits, sym, groupsize, actorder, static_groups):
    layer = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    layer.weight.data = torch.from_numpy(w.copy())
    g = ref_gptq.GPTQ(layer)
    g.quantizer = ref_quant.Quantizer()
    g.quantizer.configure(bits, perchannel=True, sym=sym, mse=False)
    xt = torch.from_numpy(x)
    half = x.shape[0] // 2  # two streamed batches
    g.add_batch(xt[:half].unsqueeze(1), None)
    g.add_batch(xt[half:].unsqueeze(1), None)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        g.fasterquant(blocksize=128, percdamp=0.01, groupsize=groupsize, actorder=actorder,
                      static_groups=static_groups)
    loss = None
    for line in out.getvalue().splitlines():
        if line.startswith("error"):
            loss = float(line.split()[1])
    return layer.weight.data.numpy().astype(np.float32), loss


def run_rtn(ref_quant, w, bits, sym, groupsize, mse):
    wt = torch.from_numpy(w.copy())
    cols = w.shape[1]
    g = cols if groupsize <= 0 else groupsize
    q = torch.zeros_like(wt)
    scales, zeros = [], []
    for i in range(0, cols, g):
        quantizer = ref_quant.Quantizer()
        quantizer.configure(bits, perchannel=True, sym=sym, mse=mse)
        part = wt[:, i:i + g]
        quantizer.find_params(part, weight=True)
        q[:, i:i + g] = ref_quant.quantize(part, quantizer.scale, quantizer.zero, quantizer.maxq)
        scales.append(quantizer.scale.reshape(-1))
        zeros.append(quantizer.zero.reshape(-1))
    return (q.numpy().astype(np.float32), torch.stack(scales, 1).numpy().astype(np.float32),
            torch.stack(zeros, 1).numpy().astype(np.float32))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, help="folder holding the reference gptq.py, quant.py")
    ap.add_argument("--out", default="tests/fixtures/gptq")
    args = ap.parse_args()
    ref_gptq, ref_quant = load_reference(args.reference)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    manifest = {"reference": "IST-DASLab/gptq gptq.py + quant.py", "gptq": [], "rtn": []}

    def save(name, arr):
        np.save(os.path.join(args.out, name + ".npy"), np.ascontiguousarray(arr, dtype=np.float32))
        return name + ".npy"

    rng = np.random.default_rng(20240601)
    inputs = {
        "a": (weights(rng, 64, 128, zero_rows=(3,)), correlated_activations(rng, 256, 128, dead=(5,))),
        # fewer tokens than columns: H is rank deficient, only the damping makes it invertible
        "b": (weights(rng, 96, 200), correlated_activations(rng, 150, 200, dead=(17,))),
    }
    for key, (w, x) in inputs.items():
        save(f"{key}_w", w)
        save(f"{key}_x", x)
    cases = [
        ("a", 4, False, -1, False, False), ("a", 3, True, -1, False, False),
        ("a", 4, False, 32, False, False), ("a", 3, True, 32, False, False),
        ("a", 4, False, 32, False, True), ("a", 4, False, 32, True, True),
        ("a", 3, False, -1, True, False), ("a", 4, True, 64, True, True),
        ("a", 3, False, 48, False, False),
        ("b", 4, False, 64, False, False), ("b", 3, True, 64, True, True),
        ("b", 2, False, -1, False, False),
    ]
    for key, bits, sym, group, act, static in cases:
        w, x = inputs[key]
        q, loss = run_gptq(ref_gptq, ref_quant, w, x, bits, sym, group, act, static)
        name = f"gptq_{key}_b{bits}_{'sym' if sym else 'asym'}_g{max(group, 0)}" + \
               ("_act" if act else "") + ("_static" if static else "")
        manifest["gptq"].append({"name": name, "w": f"{key}_w.npy", "x": f"{key}_x.npy",
                                 "q": save(name, q), "loss": loss, "bits": bits, "sym": sym,
                                 "group_size": max(group, 0), "act_order": act,
                                 "static_groups": static})

    w_rtn = weights(rng, 32, 96, zero_rows=(2,))
    w_rtn[5, :] = np.abs(w_rtn[5, :])  # a row without negative values (symmetric corner case)
    save("rtn_w", w_rtn)
    rtn_cases = [(b, s, -1, False) for b in (2, 3, 4, 8) for s in (False, True)]
    rtn_cases += [(b, s, 32, False) for b in (3, 4) for s in (False, True)]
    rtn_cases += [(4, False, 40, False)]
    rtn_cases += [(b, s, g, True) for b in (3, 4) for s in (False, True) for g in (-1, 32)]
    for bits, sym, group, mse in rtn_cases:
        q, scales, zeros = run_rtn(ref_quant, w_rtn, bits, sym, group, mse)
        name = f"rtn_b{bits}_{'sym' if sym else 'asym'}_g{max(group, 0)}" + ("_mse" if mse else "")
        manifest["rtn"].append({"name": name, "w": "rtn_w.npy", "q": save(name, q),
                                "scales": save(name + "_scales", scales),
                                "zeros": save(name + "_zeros", zeros), "bits": bits, "sym": sym,
                                "group_size": max(group, 0), "mse": mse})
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
