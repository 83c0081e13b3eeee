#!/usr/bin/env python3
"""Writes tests/fixtures/sensitivity/nsds_reference.json: excess kurtosis (scipy.stats.kurtosis),
singular values (numpy.linalg.svd) and MAD (scipy.stats.median_abs_deviation, scale='normal')
of small seeded matrices, as independent references for fragile's NSDS building blocks.

Usage: python3 tools/make_nsds_fixtures.py [out.json]
"""
import json
import sys

import numpy as np
from scipy import stats


def main():
    rng = np.random.default_rng(7)
    mats = []
    for rows, cols, tail in ((16, 12, "normal"), (9, 20, "t3"), (24, 24, "lowrank")):
        if tail == "normal":
            w = rng.normal(0, 0.02, size=(rows, cols))
        elif tail == "t3":
            w = 0.01 * rng.standard_t(3, size=(rows, cols))
        else:
            w = rng.normal(size=(rows, 3)) @ rng.normal(size=(3, cols)) + 1e-3 * rng.normal(size=(rows, cols))
        w = w.astype(np.float32)
        s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
        mats.append({"rows": rows, "cols": cols, "w": w.ravel().tolist(),
                     "kurtosis": float(stats.kurtosis(w.ravel().astype(np.float64))),
                     "singular_values": s.tolist()})
    v = rng.lognormal(size=11)
    doc = {"generator": "tools/make_nsds_fixtures.py", "matrices": mats,
           "mad_input": v.tolist(),
           "median": float(np.median(v)),
           "mad_normal": float(stats.median_abs_deviation(v, scale="normal"))}
    path = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/sensitivity/nsds_reference.json"
    with open(path, "w") as f:
        json.dump(doc, f)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
