#!/usr/bin/env python3
"""Checks fragile's llama.cpp export against llama.cpp's own Python package and transformers.

    check_llama_cpp_export.py RECIPE_DIR IMATRIX_GGUF WINDOWS_JSON HF_MODEL_DIR [--rtol 1e-5]

RECIPE_DIR is what write_llama_cpp_recipe wrote (recipe.json, tensor-types.txt,
quantize-args.txt); IMATRIX_GGUF what write_imatrix_gguf wrote; WINDOWS_JSON the calibration
windows the importance matrix was collected on, {"seq_len": T, "windows": [[ids...], ...]}; and
HF_MODEL_DIR the Hugging Face model (e.g. examples/models/kjv-tiny).

It checks, sharing no code with fragile:
  (a) every GGUF name in recipe.json is the one gguf-py's tensor name map gives the HF name
      (gguf.get_tensor_name_map for the model's architecture), every ggml type's block size
      and bytes are gguf.GGML_QUANT_SIZES', the average bits per weight recomputes, and
      tensor-types.txt / quantize-args.txt say the same as recipe.json, each pattern selecting
      exactly its own tensor under re.search (llama-quantize's std::regex_search);
  (b) gguf.GGUFReader reads the importance matrix: llama-imatrix's keys and values, one
      `.in_sum2` and one `.counts` per linear weight in sorted order, F32, shapes [in, 1] and
      [1, 1], in_sum2 equal to the sum of x^2 of each nn.Linear's input under forward
      pre-hooks on transformers' float32 model over the same windows (to --rtol), and counts
      equal to the token rows.
Prints PASS/FAIL per check and a summary; exits 1 on any failure, 2 on unusable input.
"""

import argparse
import json
import math
import re
import shlex
import sys
from pathlib import Path

import gguf
import numpy as np
import torch
import transformers

# convert_hf_to_gguf.py converts Mistral checkpoints with the llama architecture.
ARCHITECTURES = {"llama": gguf.MODEL_ARCH.LLAMA, "mistral": gguf.MODEL_ARCH.LLAMA,
                 "qwen2": gguf.MODEL_ARCH.QWEN2}


class Checks:
    def __init__(self):
        self.results = []

    def check(self, name, ok, detail=""):
        self.results.append((name, bool(ok)))
        print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail else ""))
        return ok


def check_recipe(c, recipe_dir, config):
    recipe = json.loads((recipe_dir / "recipe.json").read_text())
    layers = recipe["layers"]
    model_type = config["model_type"]
    if model_type not in ARCHITECTURES:
        sys.exit(f"check_llama_cpp_export: model_type '{model_type}' is not one of {sorted(ARCHITECTURES)}")
    tmap = gguf.get_tensor_name_map(ARCHITECTURES[model_type], config["num_hidden_layers"])

    wrong = []
    for l in layers:
        want = tmap.get_name(l["name"] + ".weight", try_suffixes=(".weight", ".bias"))
        if want != l["gguf_name"]:
            wrong.append(f"{l['name']}: {l['gguf_name']} != {want}")
    c.check(f"(a) {len(layers)} GGUF names equal gguf-py's tensor name map "
            f"({ARCHITECTURES[model_type].name}, {config['num_hidden_layers']} blocks)",
            not wrong and len(layers) == 7 * config["num_hidden_layers"], "; ".join(wrong[:3]))

    wrong = []
    for l in layers:
        qt = gguf.GGMLQuantizationType[l["type"].upper()]
        if (gguf.GGML_QUANT_SIZES[qt] != (l["block_weights"], l["block_bytes"]) or qt.value != l["ggml_type"]
                or not math.isclose(l["bits_per_weight"], 8 * l["block_bytes"] / l["block_weights"])):
            wrong.append(f"{l['type']}: {l['ggml_type']}, {l['block_weights']}/{l['block_bytes']} vs "
                         f"{qt.value}, {gguf.GGML_QUANT_SIZES[qt]}")
    for bits, t in recipe["table"].items():
        qt = gguf.GGMLQuantizationType[t["type"].upper()]
        if gguf.GGML_QUANT_SIZES[qt] != (t["block_weights"], t["block_bytes"]) or qt.value != t["ggml_type"]:
            wrong.append(f"table {bits}: {t}")
    c.check("(a) ggml type ids, block sizes and bytes equal gguf.GGML_QUANT_SIZES", not wrong,
            "; ".join(wrong[:3]))

    n = sum(l["parameters"] for l in layers)
    avg = sum(l["parameters"] * l["bits_per_weight"] for l in layers) / n
    c.check("(a) parameter-weighted average bits per weight", math.isclose(avg, recipe["average_bits_per_weight"],
                                                                          rel_tol=1e-12),
            f"{avg:.6f} vs {recipe['average_bits_per_weight']:.6f}")

    names = [l["gguf_name"] for l in layers]
    tokens = (recipe_dir / "tensor-types.txt").read_text().split()
    wrong = []
    if len(tokens) != len(layers):
        wrong.append(f"{len(tokens)} tokens for {len(layers)} layers")
    for tok, l in zip(tokens, layers):
        pattern, _, qtype = tok.rpartition("=")
        hits = [x for x in names + ["blk.1" + l["gguf_name"][4:]] if re.search(pattern.lower(), x)]
        if hits != [l["gguf_name"]] or qtype != l["type"]:
            wrong.append(f"{tok} selects {hits}")
    c.check("(a) tensor-types.txt: one PATTERN=TYPE token per layer, each selecting only its tensor",
            not wrong, "; ".join(wrong[:3]))

    args = shlex.split((recipe_dir / "quantize-args.txt").read_text())
    c.check("(a) quantize-args.txt is --tensor-type TOKEN for each token of tensor-types.txt",
            args[0::2] == ["--tensor-type"] * len(tokens) and args[1::2] == tokens)
    return layers


def hf_sums(model_dir, windows):
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    sums, rows = {}, {}

    def hook(name):
        def pre(_module, args):
            x = args[0].detach().to(torch.float64)
            x = x.reshape(-1, x.shape[-1])
            sums[name] = sums.get(name, 0) + (x * x).sum(dim=0)
            rows[name] = rows.get(name, 0) + x.shape[0]
        return pre

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("model.layers."):
            module.register_forward_pre_hook(hook(name))
    with torch.no_grad():
        for w in windows:
            model(input_ids=torch.tensor([w], dtype=torch.long))
    return {k: v.numpy() for k, v in sums.items()}, rows


def check_imatrix(c, path, layers, windows, seq_len, model_dir, rtol):
    reader = gguf.GGUFReader(path)
    kv = [k for k in reader.fields if not k.startswith("GGUF.")]
    c.check("(b) KV keys are llama-imatrix's, in its order",
            kv == ["general.type", "imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"], str(kv))
    f = reader.fields
    c.check("(b) general.type = imatrix", f["general.type"].contents() == "imatrix")
    datasets = f["imatrix.datasets"].contents()
    c.check("(b) imatrix.datasets is an array of strings",
            isinstance(datasets, list) and all(isinstance(d, str) for d in datasets), str(datasets))
    c.check("(b) imatrix.chunk_count = number of windows", f["imatrix.chunk_count"].contents() == len(windows),
            f"{f['imatrix.chunk_count'].contents()} vs {len(windows)}")
    c.check("(b) imatrix.chunk_size = tokens per window", f["imatrix.chunk_size"].contents() == seq_len,
            f"{f['imatrix.chunk_size'].contents()} vs {seq_len}")

    in_features = {l["gguf_name"]: l["in_features"] for l in layers}
    want = [n + s for n in sorted(in_features) for s in (".in_sum2", ".counts")]
    got = [t.name for t in reader.tensors]
    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    c.check(f"(b) {len(want)} tensors: .in_sum2 and .counts per linear weight, names sorted", got == want,
            "" if got == want else f"{len(got)} tensors; first difference at {first}: "
            f"{got[first] if first < len(got) else None} vs {want[first] if first < len(want) else None}")

    def ne(t):  # GGUFReader's shape is ggml's ne, trailing 1s as the file has them
        s = [int(d) for d in t.shape]
        return s + [1] * (2 - len(s))

    tensors = {t.name: t for t in reader.tensors}
    wrong = []
    for name, n in in_features.items():
        s, k = tensors.get(name + ".in_sum2"), tensors.get(name + ".counts")
        if s is None or k is None:
            wrong.append(f"{name} missing")
            continue
        if s.tensor_type != gguf.GGMLQuantizationType.F32 or ne(s) != [n, 1]:
            wrong.append(f"{name}.in_sum2: {s.tensor_type.name} {ne(s)}")
        if k.tensor_type != gguf.GGMLQuantizationType.F32 or ne(k) != [1, 1]:
            wrong.append(f"{name}.counts: {k.tensor_type.name} {ne(k)}")
    c.check("(b) F32, in_sum2 ne = [in_features, 1], counts ne = [1, 1]", not wrong, "; ".join(wrong[:3]))

    ref, ref_rows = hf_sums(model_dir, windows)
    hf_of = {l["gguf_name"]: l["name"] for l in layers}
    worst, worst_name, wrong, bad_counts = 0.0, "", [], []
    for name in in_features:
        if name + ".in_sum2" not in tensors or hf_of[name] not in ref:
            wrong.append(name)
            continue
        got_s = np.asarray(tensors[name + ".in_sum2"].data, dtype=np.float64).reshape(-1)
        want_s = ref[hf_of[name]]
        if got_s.shape != want_s.shape:
            wrong.append(f"{name}: {got_s.shape} vs {want_s.shape}")
            continue
        rel = float(np.max(np.abs(got_s - want_s) / np.maximum(np.abs(want_s), 1e-30)))
        if rel > worst:
            worst, worst_name = rel, name
        count = float(np.asarray(tensors[name + ".counts"].data).reshape(-1)[0])
        if count != ref_rows[hf_of[name]] or count != len(windows) * seq_len:
            bad_counts.append(f"{name}: {count} vs {ref_rows[hf_of[name]]}")
    c.check(f"(b) in_sum2 = sum of x^2 of each nn.Linear's input in transformers {transformers.__version__} "
            f"(float32) over {len(windows)} windows, to {rtol:g} relative",
            not wrong and worst <= rtol, f"max relative difference {worst:.3g} at {worst_name}" +
            (f"; missing {wrong[:3]}" if wrong else ""))
    c.check(f"(b) counts = token rows ({len(windows)} x {seq_len})", not bad_counts, "; ".join(bad_counts[:3]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe_dir", type=Path)
    ap.add_argument("imatrix", type=Path)
    ap.add_argument("windows_json", type=Path)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--rtol", type=float, default=1e-5)
    a = ap.parse_args()
    for p in (a.recipe_dir / "recipe.json", a.recipe_dir / "tensor-types.txt", a.recipe_dir / "quantize-args.txt",
              a.imatrix, a.windows_json, a.model_dir / "config.json"):
        if not p.is_file():
            print(f"check_llama_cpp_export: '{p}' is not a file", file=sys.stderr)
            return 2
    config = json.loads((a.model_dir / "config.json").read_text())
    win = json.loads(a.windows_json.read_text())
    seq_len, windows = int(win["seq_len"]), win["windows"]
    if not windows or any(len(w) != seq_len for w in windows):
        print(f"check_llama_cpp_export: '{a.windows_json}': every window must hold seq_len = {seq_len} ids",
              file=sys.stderr)
        return 2

    c = Checks()
    layers = check_recipe(c, a.recipe_dir, config)
    check_imatrix(c, a.imatrix, layers, windows, seq_len, a.model_dir, a.rtol)
    failed = [n for n, ok in c.results if not ok]
    print(f"\n{'PASS' if not failed else 'FAIL'}: {len(c.results) - len(failed)} of {len(c.results)} checks passed"
          + (f"; failed: {'; '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
