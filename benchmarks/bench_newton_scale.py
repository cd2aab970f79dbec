"""Cost of one outer step of the second-order method (``method="newton"``) at 10⁶ stars and ~10⁵ training cells.

Reuses the simulated sky, grids and memory probe of ``bench_scaling.py``; times each outer step on the training grid
(a natural-gradient step of q(v) and, after the two warm-up steps, a Fisher step of the hyperparameters with an
L-BFGS step of the inducing locations, with their trial evaluations; no coarse stage, whose steps are cheaper) and
records the peak memory.

    .venv/bin/python benchmarks/bench_newton_scale.py                  # 10⁶ stars, ~10⁵ cells, M = 1000, 3 steps
    .venv/bin/python benchmarks/bench_newton_scale.py --quick          # 10⁵ stars, ~10⁴ cells, M = 300
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import dustgp
from bench_scaling import REGION, Stars, machine, memory_probe, region_grid, versions
from dustgp.fitting import newton

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10⁵ stars, ~10⁴ cells, M = 300")
    parser.add_argument("--steps", type=int, default=3, help="outer steps timed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_stars, shape, inducing = (100_000, (20, 20, 24), 300) if args.quick else (1_000_000, (40, 40, 59), 1000)
    out = args.out or HERE / "results" / ("newton-scale-quick.json" if args.quick else "newton-scale.json")

    stars = Stars(n_stars, (60, 60, 60), seed=0)
    grid = region_grid(shape, 2)
    times: list[float] = []
    original = newton.NewtonOptimizer.step

    def timed(self: newton.NewtonOptimizer):
        start = time.perf_counter()
        result = original(self)
        times.append(time.perf_counter() - start)
        return result

    newton.NewtonOptimizer.step = timed  # type: ignore[method-assign]
    try:
        with memory_probe() as memory:
            start = time.perf_counter()
            fit = dustgp.fit(
                stars.catalog(n_stars), grid, method="newton", inducing_points=inducing, length_scale=20.0,
                max_iterations=args.steps, stop="none", seed=1, progress=False, coarse_start=False,
            )  # fmt: skip
            total = time.perf_counter() - start
    finally:
        newton.NewtonOptimizer.step = original  # type: ignore[method-assign]
    row = {
        "stars": n_stars,
        "cells": grid.n_cells,
        "grid_shape": list(grid.shape),
        "inducing": inducing,
        "dtype": "float64",
        "steps": fit.iterations,
        "setup_s": total - sum(times),
        "per_step_median_s": statistics.median(times),
        "per_step_s": times,
        **memory,
    }
    print(f"{'stars':>9s} {'cells':>8s} {'M':>5s} {'setup s':>8s} {'s/step':>8s} {'peak MB':>8s}")
    print(
        f"{row['stars']:9d} {row['cells']:8d} {inducing:5d} {row['setup_s']:8.1f} {row['per_step_median_s']:8.2f} "
        f"{row['peak_mb']:8.0f}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "newton-scale", "region": REGION, "machine": machine(), "versions": versions()}
    payload["rows"] = [row]
    out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
