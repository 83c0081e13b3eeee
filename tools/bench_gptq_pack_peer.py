#!/usr/bin/env python3
"""The peer of bench/export's BM_pack_gptq: GPTQModel packing one 4096 x 4096 layer on the CPU.

Builds an RTN grid (group 128, asymmetric) for a random weight and times GPTQModel's
TorchLinear.pack (qweight, qzeros, scales, g_idx from a dequantized nn.Linear), the same work
fragile's pack_gptq does from its codes. Prints the median of --reps runs and the packed codes'
bytes per second (in * out * bits / 8 bytes, as bench_export reports).

Usage: python3 tools/bench_gptq_pack_peer.py --bits 4 [--reps 5] [--threads 2]
"""
import argparse
import statistics
import time

import torch
from gptqmodel.nn_modules.qlinear.torch import TorchLinear


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    n, group, maxq = 4096, 128, 2 ** a.bits - 1
    torch.manual_seed(7)
    w = torch.randn(n, n) * 0.02
    g = w.view(n, n // group, group)
    lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)
    scale = ((hi - lo) / maxq).clamp(min=1e-8).half().float()
    zero = torch.round(-lo / scale).clamp(1, maxq)
    q = torch.clamp(torch.round(g / scale[..., None]) + zero[..., None], 0, maxq)
    linear = torch.nn.Linear(n, n, bias=False)
    linear.weight.data = ((q - zero[..., None]) * scale[..., None]).view(n, n).half()
    g_idx = torch.arange(n, dtype=torch.int32) // group
    times = []
    for _ in range(a.reps):
        m = TorchLinear(bits=a.bits, group_size=group, sym=False, desc_act=False,
                        in_features=n, out_features=n, bias=False)
        t0 = time.perf_counter()
        m.pack(linear, scale.half(), zero.to(torch.int32), g_idx, workers=a.threads)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    print(f"gptqmodel pack {a.bits}-bit 4096x4096: {t * 1e3:.1f} ms "
          f"bytes_per_second={n * n * a.bits / 8 / t / 1e9:.3f}G/s")


if __name__ == "__main__":
    main()
