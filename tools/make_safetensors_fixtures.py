#!/usr/bin/env python3
"""Writes the safetensors golden fixtures and fuzz seeds with the reference implementation.

tests/fixtures/safetensors/
  reference.safetensors        one file written by safetensors.torch.save_file
  sharded/                     the same tensors sharded by huggingface_hub.save_torch_state_dict
  expected.json                per tensor: dtype, shape, the f32 values the stored data decode to
                               (as uint32 bit patterns) and, for bf16/f16, the f32 source values
                               torch rounded (so the C++ side can check it rounds identically)
tests/fuzz/corpus/safetensors_header/
                               small valid files that seed the header fuzzer

Usage: python3 tools/make_safetensors_fixtures.py   (from the repository root; needs torch,
safetensors and huggingface_hub; the outputs are committed, so tests never need Python).
"""
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import save_torch_state_dict
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "safetensors"
SEEDS = ROOT / "tests" / "fuzz" / "corpus" / "safetensors_header"


def f32_bits(t):
    return [int(v) for v in t.to(torch.float32).contiguous().view(torch.int32).numpy().view(np.uint32)]


def main():
    g = torch.Generator().manual_seed(1234)
    # Rounding cases: exact values, ties (to even), values just off ties, subnormals, overflow.
    half_src = torch.tensor(
        [1.0, -2.5, 3.14159265, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11,
         1.0 + 2.0**-8 + 2.0**-20, 65504.0, 65519.0, 65520.0, 70000.0, 3.0e38, -1.0e-40, 6.0e-8,
         2.0**-25, 3 * 2.0**-26, 1.0e-5, -0.0, 0.1, float("inf"), float("-inf")],
        dtype=torch.float32)
    randn = torch.randn(4, 8, generator=g, dtype=torch.float32) * 0.02
    tensors = {
        "f32.matrix": (torch.arange(12, dtype=torch.float32) * 0.25 - 1.0).reshape(3, 4),
        "bf16.cases": half_src.to(torch.bfloat16),
        "f16.cases": half_src.to(torch.float16),
        "bf16.randn": randn.to(torch.bfloat16),
        "f16.randn": randn.reshape(2, 4, 4).to(torch.float16),
        "i8.values": torch.tensor([-128, -1, 0, 1, 127, 42], dtype=torch.int8).reshape(2, 3),
        "u8.values": torch.tensor([0, 1, 128, 255], dtype=torch.uint8),
        "scalar": torch.tensor(42.5, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
    }
    sources = {"bf16.cases": half_src, "f16.cases": half_src, "bf16.randn": randn,
               "f16.randn": randn.reshape(2, 4, 4)}
    metadata = {"format": "pt", "note": "fragile golden fixture"}

    if FIX.exists():
        shutil.rmtree(FIX)
    FIX.mkdir(parents=True)
    save_file(tensors, str(FIX / "reference.safetensors"), metadata=metadata)
    # Small max_shard_size so the 9 tensors spread over several shards.
    (FIX / "sharded").mkdir()
    save_torch_state_dict(tensors, str(FIX / "sharded"), max_shard_size=200,
                          metadata=metadata, safe_serialization=True)

    expected = {"metadata": metadata, "tensors": {}}
    dtypes = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
              torch.int8: "I8", torch.uint8: "U8"}
    for name, t in tensors.items():
        e = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "bits": f32_bits(t.flatten())}
        if name in sources:
            e["source_bits"] = f32_bits(sources[name].flatten())
        expected["tensors"][name] = e
    (FIX / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")

    # Fuzz seeds: the reference file, an empty header, metadata only, one tiny tensor per dtype.
    if SEEDS.exists():
        shutil.rmtree(SEEDS)
    SEEDS.mkdir(parents=True)
    shutil.copy(FIX / "reference.safetensors", SEEDS / "reference.safetensors")

    def raw(header, data=b""):
        h = json.dumps(header, separators=(",", ":")).encode()
        return struct.pack("<Q", len(h)) + h + data

    (SEEDS / "empty_header").write_bytes(raw({}))
    (SEEDS / "metadata_only").write_bytes(raw({"__metadata__": {"format": "pt"}}))
    (SEEDS / "two_tensors").write_bytes(raw(
        {"a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]},
         "b": {"dtype": "U8", "shape": [1, 2], "data_offsets": [4, 6]}}, b"\x80\x3f\x00\x40\x01\x02"))
    save_file({"w": torch.ones(2, 2, dtype=torch.float16)}, str(SEEDS / "f16_small.safetensors"))
    print(f"wrote {FIX} and {SEEDS}")


if __name__ == "__main__":
    main()
