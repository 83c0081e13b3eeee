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
qwen2 (q/k/v bias, tied embeddings, GQA, sharded), mistral (GQA, sliding window 6 < T = 16).
Attention is the eager implementation; all non-matrix parameters (norm weights, biases) are
randomised so that they are exercised.

Usage: python3 tools/make_hf_fixtures.py   (repository root; needs torch, transformers,
safetensors; the outputs are committed, so tests never need Python).
"""
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
    raise ValueError(arch)


def main():
    for seed, arch in enumerate(["llama", "llama3", "qwen2", "mistral"]):
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
