#!/usr/bin/env python3
"""Writes tests/fixtures/stats/correlations.json: Pearson, Spearman and Kendall tau-b with
two-sided p-values as computed by scipy.stats, on cases that exercise ties, n = 3, |r| = 1,
the exact / asymptotic switch of Kendall, and realistic metric-vs-fragility vectors.

Usage: python3 tools/make_stats_fixtures.py [out.json]
"""
import json
import sys

import numpy as np
import scipy
from scipy import stats


def case(name, x, y):
    x = [float(v) for v in x]
    y = [float(v) for v in y]
    out = {"name": name, "x": x, "y": y}
    for key, fn in (("pearson", stats.pearsonr), ("spearman", stats.spearmanr),
                    ("kendall", stats.kendalltau)):
        r = fn(x, y)
        out[key] = {"statistic": float(r.statistic), "p_value": float(r.pvalue)}
    return out


def main():
    rng = np.random.default_rng(20261122)
    cases = [
        case("n3", [1, 2, 3], [2, 1, 4]),
        case("n3_perfect", [1, 2, 3], [10, 20, 30]),
        case("n3_perfect_negative", [1, 2, 3], [3, 2, 1]),
        case("perfect_n10", range(10), [2 * v + 1 for v in range(10)]),
        case("ties_both", [1, 2, 2, 3, 3, 3, 4, 5], [2, 1, 2, 3, 5, 5, 4, 4]),
        case("ties_x_only", [1, 1, 1, 2, 2, 3, 4, 5, 6, 6], [3, 1, 4, 1, 5, 9, 2, 6, 5, 3.5]),
        case("scipy_doc", [12, 2, 1, 12, 2], [1, 4, 7, 1, 0]),
    ]
    for n in (5, 12, 33, 34, 35, 60):
        x = rng.normal(size=n)
        y = 0.5 * x + rng.normal(size=n)
        cases.append(case(f"random_n{n}", x, y))
    # 35 layers, as stories260K: a heavy-tailed metric against a noisy monotone fragility.
    metric = rng.lognormal(sigma=1.5, size=35)
    fragility = np.log(metric) + rng.normal(scale=1.0, size=35)
    cases.append(case("layers35_lognormal", metric, fragility))
    # Large n with ties: Kendall's asymptotic branch with tie corrections.
    x = rng.integers(0, 6, size=80)
    y = x + rng.integers(0, 3, size=80)
    cases.append(case("ties_n80", x, y))
    # Few discordant pairs at n > 33 (scipy still uses the exact distribution).
    x = np.arange(40.0)
    y = x.copy()
    y[[3, 4]] = y[[4, 3]]
    cases.append(case("n40_one_swap", x, y))
    doc = {"generator": "tools/make_stats_fixtures.py", "scipy": scipy.__version__,
           "numpy": np.__version__, "cases": cases}
    path = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/stats/correlations.json"
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
