#!/usr/bin/env python3
"""Writes the Hugging Face golden fixtures that the transformer runtime is tested against.

For each architecture a tiny randomly initialised float32 model is created with `transformers`
itself, saved with `save_pretrained` (safetensors; qwen2 sharded), run on fixed token ids, and the
reference values are dumped:

tests/fixtures/hf/<arch>/
  config.json, model.safetensors | model-0000x-of-0000y.safetensors + index   (save_pretrained)
  golden.json         input ids [B][T], per-window mean token cross-entropy, the loss
  golden.safetensors  logits (B, T, V);  x.<linear> (B*T, in) = input of every linear layer;
                      g.<linear> (B*T, out) = dL/dy of its output;  dw.<linear> (out, in) = dL/dW

L = sum over windows of the window's mean next-token cross-entropy (labels = the ids shifted by
one, T-1 predictions per window), so g for a token equals d(window mean CE)/dy, whatever B is.

Architectures: llama (MHA, untied head), llama3 (GQA, llama3 rope scaling, rope_theta 5e5),
qwen2 (q/k/v bias, tied embeddings, GQA, sharded), mistral (GQA, sliding window 6 < T = 16),
qwen2_swa (qwen2 with per-layer sliding-window attention: 3 blocks, untied head,
use_sliding_window with sliding_window 5 < T = 16 and max_window_layers 1, so config.layer_types is
full_attention for block 0 and sliding_attention for blocks 1 and 2; each query there sees itself
and the 4 keys before it). Attention is the eager implementation; all non-matrix parameters (norm
weights, biases) are randomised so that they are exercised. Each architecture has its own seed,
fixed by its position in ARCHS (new ones are appended, so the others' outputs do not change).

Usage: python3 tools/make_hf_fixtures.py [ARCH ...]   (repository root; no ARCH = all of them;
needs torch, transformers, safetensors; the outputs are committed, so tests never need Python).
A directory that is rewritten is removed first, so run tools/make_train_fixtures.py after
regenerating llama or qwen2.
"""
import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "hf"
B, T = 2, 16
ARCHS = ["llama", "llama3", "qwen2", "mistral", "qwen2_swa"]  # index = seed offset; append only

COMMON = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              head_dim=16, vocab_size=192, max_position_embeddings=64, rms_norm_eps=1e-5,
              initializer_range=0.08, torch_dtype="float32")


def make(arch):
    if arch == "llama":
        cfg = LlamaConfig(**COMMON, num_key_value_heads=4, rope_theta=10000.0,
                          tie_word_embeddings=False, attention_bias=False, mlp_bias=False)
        return LlamaForCausalLM(cfg)
    if arch == "llama3":
        cfg = LlamaConfig(**COMMON, num_key_value_heads=2, rope_theta=500000.0,
                          rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 32},
                          tie_word_embeddings=False)
        return LlamaForCausalLM(cfg)
    if arch == "qwen2":
        cfg = Qwen2Config(**COMMON, num_key_value_heads=2, rope_theta=1000000.0,
                          tie_word_embeddings=True, use_sliding_window=False)
        return Qwen2ForCausalLM(cfg)
    if arch == "mistral":
        cfg = MistralConfig(**COMMON, num_key_value_heads=2, rope_theta=10000.0,
                            sliding_window=6, tie_word_embeddings=False)
        return MistralForCausalLM(cfg)
    if arch == "qwen2_swa":
        cfg = Qwen2Config(**{**COMMON, "num_hidden_layers": 3}, num_key_value_heads=2,
                          rope_theta=1000000.0, tie_word_embeddings=False,
                          use_sliding_window=True, sliding_window=5, max_window_layers=1)
        assert cfg.layer_types == ["full_attention", "sliding_attention", "sliding_attention"], \
            cfg.layer_types
        assert cfg.sliding_window == 5, cfg.sliding_window
        return Qwen2ForCausalLM(cfg)
    raise ValueError(arch)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # choices= is not used: with nargs="*" and no argument, Python < 3.12 rejects the empty list.
    parser.add_argument("archs", nargs="*", metavar="ARCH",
                        help="architectures to write (default: all of " + ", ".join(ARCHS) + ")")
    args = parser.parse_args()
    unknown = [a for a in args.archs if a not in ARCHS]
    if unknown:
        parser.error("unknown architecture %s (choose from %s)" % (", ".join(unknown), ", ".join(ARCHS)))
    wanted = set(args.archs or ARCHS)
    for seed, arch in enumerate(ARCHS):
        if arch not in wanted:
            continue
        torch.manual_seed(1234 + seed)
        model = make(arch).float()
        model.config._attn_implementation = "eager"
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.ndim == 1 and "norm" in name:
                    p.copy_(1.0 + 0.2 * torch.randn_like(p))
                elif p.ndim == 1:
                    p.copy_(0.1 * torch.randn_like(p))
        out = FIX / arch
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        model.save_pretrained(out, safe_serialization=True,
                              max_shard_size="200KB" if arch == "qwen2" else "50GB")

        ids = torch.randint(0, model.config.vocab_size, (B, T), generator=torch.Generator().manual_seed(7 + seed))
        xs, gs = {}, {}
        hooks = []
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and name.startswith("model.layers."):
                def fwd(m, inp, outp, name=name):
                    xs[name] = inp[0].detach().reshape(B * T, -1).clone()
                    outp.register_hook(lambda g, name=name: gs.__setitem__(name, g.reshape(B * T, -1).clone()))
                hooks.append(mod.register_forward_hook(fwd))
        model.zero_grad()
        logits = model(input_ids=ids).logits  # (B, T, V)
        ce = torch.nn.functional.cross_entropy(
            logits[:, :-1, :].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
            reduction="none").reshape(B, T - 1)
        window_loss = ce.mean(dim=1)
        loss = window_loss.sum()
        loss.backward()
        for h in hooks:
            h.remove()

        tensors = {"logits": logits.detach().contiguous()}
        for name in xs:
            tensors["x." + name] = xs[name].contiguous()
            tensors["g." + name] = gs[name].contiguous()
            tensors["dw." + name] = dict(model.named_parameters())[name + ".weight"].grad.detach().clone()
        save_file(tensors, str(out / "golden.safetensors"))
        (out / "golden.json").write_text(json.dumps({
            "input_ids": ids.tolist(),
            "window_loss": [float(v) for v in window_loss.detach()],
            "loss": float(loss.detach()),
            "transformers_version": __import__("transformers").__version__,
            "torch_version": torch.__version__,
        }, indent=1) + "\n")
        print(arch, "loss", float(loss), "files", sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()
