#!/usr/bin/env python3
"""PyTorch peer of bench/train/bench_train.cpp: training steps of a transformers
LlamaForCausalLM (f32, eager attention, CPU) with torch.optim.AdamW and clip_grad_norm_, on random
batches of the same shape. Prints 'tokens/s X' (trained tokens: B*(T-1) per step) last.

Usage: python3 tools/bench_train_peer.py [--threads 2] [--steps 10] [--hidden 128] ...
"""
import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=352)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=128)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=a.hidden, intermediate_size=a.intermediate,
                      num_hidden_layers=a.layers, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=a.hidden // 4, vocab_size=a.vocab, max_position_embeddings=a.seqlen,
                      rms_norm_eps=1e-5, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).float()
    model.config._attn_implementation = "eager"
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(1)

    def step():
        ids = torch.randint(0, a.vocab, (a.batch, a.seqlen), generator=g)
        opt.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t0
    print(f"tokens/s {a.steps * a.batch * (a.seqlen - 1) / dt:.1f}")


if __name__ == "__main__":
    main()
