#!/usr/bin/env python3
"""Unpacks a packed GPTQ checkpoint from the format's public description and compares every
layer with the fake-quantized checkpoint of the same plan, bit for bit.

Written from the GPTQ (AutoGPTQ "v1") format as transformers/optimum, GPTQModel and exllamav2
read it, sharing nothing with fragile:
  * `<module>.qweight` int32 (in * bits / 32, out): column n is W[n, :]'s integer codes as one
    little-endian bit stream along the input features, 32 bits per word (3-bit codes cross
    word boundaries: 32 codes in 3 words);
  * `<module>.qzeros` int32 (groups, out * bits / 32): each row packs the zero points of one
    group over the outputs the same way; format "gptq" (v1) stores zero - 1, "gptq_v2" the zero;
  * `<module>.scales` float16 (groups, out), `<module>.g_idx` int32 (in): the group of each
    input feature;
  * W[n, c] = scales[g_idx[c], n] * (q[c, n] - zero[g_idx[c], n]), here in float32.
The bit width of each module is read from config.json's quantization_config (its `dynamic`
overrides: "+:regex" keys matched with re.match on the module name) and checked against the
tensor shapes.

If `gptqmodel` or `optimum` is importable, it also says so (loading needs a GPU kernel build);
otherwise it reports that neither is installed.

Usage: python3 tools/check_gptq_export.py GPTQ_DIR FAKE_QUANT_DIR
Exit status 0 when every layer matches bit for bit, 1 otherwise.
"""
import json
import re
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def load_folder(d):
    d = Path(d)
    index = d / "model.safetensors.index.json"
    if index.exists():
        tensors = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            tensors.update(load_file(str(d / shard)))
        return tensors
    return load_file(str(d / "model.safetensors"))


def unpack_stream(words, count, bits):
    """words: uint32 (rows, W), each row a little-endian bit stream; returns (rows, count)."""
    b = np.ascontiguousarray(words.astype("<u4")).view(np.uint8)
    stream = np.unpackbits(b, axis=1, bitorder="little")[:, : count * bits]
    stream = stream.reshape(words.shape[0], count, bits).astype(np.uint32)
    weights = (np.uint32(1) << np.arange(bits, dtype=np.uint32))
    return (stream * weights).sum(axis=2).astype(np.uint32)


def module_bits(qc, name):
    bits, group = qc["bits"], qc["group_size"]
    for key, over in (qc.get("dynamic") or {}).items():
        pattern = key[2:] if key.startswith(("+:", "-:")) else key
        if re.match(pattern, name):
            if key.startswith("-:"):
                return None, None
            bits, group = over.get("bits", bits), over.get("group_size", group)
    return bits, group


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    gptq_dir, fq_dir = Path(sys.argv[1]), Path(sys.argv[2])
    qc = json.loads((gptq_dir / "config.json").read_text())["quantization_config"]
    v1 = qc.get("checkpoint_format", "gptq") == "gptq"
    packed, fake = load_folder(gptq_dir), load_folder(fq_dir)
    modules = sorted(k[: -len(".qweight")] for k in packed if k.endswith(".qweight"))
    if not modules:
        sys.exit(f"{gptq_dir}: no .qweight tensors")
    failures = 0
    widths = {}
    for m in modules:
        qweight, qzeros = packed[m + ".qweight"], packed[m + ".qzeros"]
        scales, g_idx = packed[m + ".scales"], packed[m + ".g_idx"]
        assert qweight.dtype == np.int32 and qzeros.dtype == np.int32 and g_idx.dtype == np.int32
        assert scales.dtype == np.float16
        n_in, n_out = g_idx.shape[0], qweight.shape[1]
        bits, group = module_bits(qc, m)
        if qweight.shape[0] * 32 != n_in * bits:
            print(f"FAIL {m}: qweight {qweight.shape} does not hold {n_in} x {bits}-bit codes")
            failures += 1
            continue
        codes = unpack_stream(qweight.T.view(np.uint32), n_in, bits)          # (out, in)
        zeros = unpack_stream(qzeros.view(np.uint32), n_out, bits)            # (groups, out)
        zeros = zeros.astype(np.int64) + (1 if v1 else 0)
        expect_g = np.arange(n_in) // group if group > 0 else np.zeros(n_in, dtype=np.int64)
        if not np.array_equal(g_idx, expect_g):
            print(f"FAIL {m}: g_idx is not c // {group}")
            failures += 1
        g = g_idx.astype(np.int64)
        s = scales.astype(np.float32)[g, :].T                                   # (out, in)
        z = zeros[g, :].T
        w = s * (codes.astype(np.float32) - z.astype(np.float32))
        ref = fake[m + ".weight"]
        if ref.dtype != np.float32:
            ref = ref.astype(np.float32)
        same = w.shape == ref.shape and np.array_equal(w.view(np.uint32), ref.view(np.uint32))
        widths[bits] = widths.get(bits, 0) + 1
        if not same:
            diff = np.abs(w - ref).max() if w.shape == ref.shape else float("nan")
            print(f"FAIL {m}: {bits}-bit dequantized weight differs from the fake-quant one "
                  f"(max |diff| {diff:.3g})")
            failures += 1
    for k in fake:
        if k.endswith(".weight") and k[: -len(".weight")] in modules:
            continue
        if k not in packed or not np.array_equal(packed[k], fake[k].astype(packed[k].dtype)):
            print(f"FAIL {k}: unquantized tensor differs between the checkpoints")
            failures += 1
    loaders = []
    for mod in ("gptqmodel", "optimum"):
        try:
            __import__(mod)
            loaders.append(mod)
        except Exception:
            pass
    print(f"{len(modules)} packed modules ({', '.join(f'{n} x {b}-bit' for b, n in sorted(widths.items()))}), "
          f"format {qc.get('checkpoint_format')}, {len(qc.get('dynamic') or {})} dynamic overrides")
    print("loaders importable here: " + (", ".join(loaders) if loaders else
                                         "none (neither gptqmodel nor optimum is installed)"))
    print("PASS: every layer dequantizes bit for bit to the fake-quant weight" if not failures
          else f"FAIL: {failures} problem(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
