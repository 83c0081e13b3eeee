#!/usr/bin/env python3
"""PyTorch peer of bench/model/bench_runtime.cpp: Hugging Face transformers Qwen2ForCausalLM with
random weights, Qwen2.5-0.5B shapes, fp32, CPU, the same thread count, one window of 512 tokens.

  forward           torch.no_grad(): model(ids, labels=ids).loss   (logits + cross-entropy)
  sgemm             torch.mm of two 2048 x 2048 fp32 matrices: the GEMM peak the runtime is
                    measured against (bench_model's BM_sgemm_2048 is fragile's own)
  forward_backward  parameters frozen (no weight gradients, like the C++ pass), gradient flowing
                    from the loss to the input embeddings, a hook on every decoder linear layer's
                    output receiving g_l (sum of squares taken, as the C++ sink does)

Prints tokens/s (median of --reps timed runs after one warm-up) and the process's peak RSS.
Run one mode per process so that the peak RSS is that mode's:
  OMP_NUM_THREADS=2 python3 tools/bench_runtime_peer.py --mode forward --threads 2
"""
import argparse
import resource
import statistics
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["forward", "forward_backward", "sgemm"], required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--attn", default="sdpa", help="transformers attn_implementation (sdpa | eager)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.mode == "sgemm":
        n = 2048
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up
        times = []
        for _ in range(max(args.reps, 5)):
            t0 = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(f"peer mode=sgemm n={n} threads={args.threads} torch={torch.__version__} "
              f"median_s={med:.4f} GFLOP/s={2 * n**3 / med * 1e-9:.1f}")
        return
    cfg = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                      num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                      max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, use_sliding_window=False,
                      attn_implementation=args.attn)
    model = Qwen2ForCausalLM(cfg).float().eval()
    weights_mb = sum(p.numel() for p in model.parameters()) * 4 / 2**20
    ids = torch.randint(0, cfg.vocab_size, (1, 512), generator=torch.Generator().manual_seed(5))

    if args.mode == "forward":
        def step():
            with torch.no_grad():
                return float(model(input_ids=ids, labels=ids).loss)
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        sink = [0.0]

        def hook(g):
            sink[0] += float(g.pow(2).sum())

        def fwd_hook(mod, inp, out):
            if out.requires_grad:
                out.register_hook(hook)

        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and name.startswith("model.layers."):
                mod.register_forward_hook(fwd_hook)

        def step():
            emb = model.model.embed_tokens(ids).detach().requires_grad_(True)
            loss = model(inputs_embeds=emb, labels=ids).loss
            loss.backward()
            return float(loss)

    step()  # warm-up
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peer mode={args.mode} attn={args.attn} threads={args.threads} torch={torch.__version__} "
          f"median_s={med:.3f} tokens/s={512 / med:.1f} peak_rss_MB={rss:.0f} weights_MB={weights_mb:.0f} "
          f"times={[round(t, 3) for t in times]}")


if __name__ == "__main__":
    main()
