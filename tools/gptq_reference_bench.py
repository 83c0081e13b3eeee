#!/usr/bin/env python3
"""Times the public reference GPTQ (IST-DASLab/gptq) on the CPU for bench/quant's shapes.

    git clone https://github.com/IST-DASLab/gptq /tmp/gptq-ref
    python3 tools/gptq_reference_bench.py --reference /tmp/gptq-ref --threads 2 > /tmp/gptq_ref.json
    FRAGILE_GPTQ_REFERENCE_JSON=/tmp/gptq_ref.json build/<dir>/bench/bench_quant --benchmark_filter=gptq

Same work as BM_gptq in bench/quant: Hessian from 2048 calibration tokens (add_batch) plus
fasterquant (4-bit asymmetric, groups of 128, block 128, damp 0.01, no act-order), f32 weights
N(0, 0.02^2), activations N(0, 1). Prints {"<rows>x<cols>": best seconds over --repeats}.
"""
import argparse
import contextlib
import io
import json
import os
import sys
import time

import torch

SHAPES = [(4096, 4096), (896, 896), (4864, 896), (896, 4864)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--shape", action="append", metavar="ROWSxCOLS",
                    help="time only this shape (repeatable); default: all of bench/quant's")
    args = ap.parse_args()
    shapes = SHAPES
    if args.shape:
        try:
            shapes = [tuple(int(v) for v in s.split("x")) for s in args.shape]
        except ValueError:
            ap.error(f"--shape expects ROWSxCOLS such as 896x4864, got {args.shape}")
    torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.abspath(args.reference))
    torch.cuda.synchronize = lambda *a, **k: None  # CPU-only run
    with contextlib.redirect_stdout(io.StringIO()):
        import gptq as ref_gptq
        import quant as ref_quant
    out = {}
    gen = torch.Generator().manual_seed(1)
    for rows, cols in shapes:
        w = 0.02 * torch.randn(rows, cols, generator=gen)
        x = torch.randn(args.tokens, 1, cols, generator=gen)
        best = float("inf")
        for _ in range(args.repeats if rows * cols < 4096 * 4096 else 1):
            layer = torch.nn.Linear(cols, rows, bias=False)
            layer.weight.data = w.clone()
            t0 = time.perf_counter()
            g = ref_gptq.GPTQ(layer)
            g.quantizer = ref_quant.Quantizer()
            g.quantizer.configure(4, perchannel=True, sym=False, mse=False)
            g.add_batch(x, None)
            with contextlib.redirect_stdout(io.StringIO()):
                g.fasterquant(blocksize=128, percdamp=0.01, groupsize=128)
            best = min(best, time.perf_counter() - t0)
        out[f"{rows}x{cols}"] = best
        print(f"{rows}x{cols}: {best:.3f} s", file=sys.stderr)
    print(json.dumps({"threads": args.threads, "tokens": args.tokens, "seconds": out}))


if __name__ == "__main__":
    main()
