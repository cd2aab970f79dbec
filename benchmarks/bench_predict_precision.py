"""How much the float32 deviations of prediction (``projection.rbf_apply_mixed``) move the map, on a real fit.

Loads a saved fit (``--fit``, e.g. the one ``bench_predict.py`` saves), draws ``--samples`` joint posterior draws of
the whitened inducing values, and projects them onto ``--cells`` cells of the Section 3 prediction grid twice: all
in float64 (``rbf_apply``) and as prediction does it, the posterior mean in float64 and each draw's deviation in
float32. Reports, in dex of phi:

- the error of the mixed projection: its maximum and 99.9th percentile, and both relative to each cell's spread
  of the draws (sigma);
- how far the 16/50/84th percentiles of phi over the draws moved, relative to their Monte Carlo standard error
  ``sqrt(p (1 - p) / S) / pdf`` (for a Gaussian, ~0.11 sigma at p = 0.16 with S = 200).

    .venv/bin/python benchmarks/bench_predict_precision.py --fit /tmp/s3.fit

Writes ``benchmarks/results/predict-precision.json``.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from statistics import NormalDist

import numpy as np
import torch

from baseline import write_record
from bench_fit import FULL, section3
from dustgp.fitting.record import load_fit
from dustgp.projection import rbf_apply, rbf_apply_mixed

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fit", type=Path, required=True)
    parser.add_argument("--cells", type=int, default=200_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "predict-precision.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    _, _, grid = section3(FULL)
    gp = load_fit(args.fit).model.eval()
    rng = np.random.default_rng(0)
    picked = np.sort(rng.choice(grid.n_cells, size=min(args.cells, grid.n_cells), replace=False))
    x = torch.as_tensor(grid.cell_centers_xyz()[picked], dtype=torch.float64) / gp.length_unit
    with torch.no_grad():
        l_zz = gp.inducing_cholesky()
        weights = gp.projection(gp.sample_whitened(args.samples, generator=torch.Generator().manual_seed(1)), l_zz)
        mean = gp.projection(gp.variational_mean.detach()[None], l_zz)[:, 0]
        alpha = float(gp.covar_module.outputscale.detach())
        z, gamma = gp.inducing_points.detach(), gp.covar_module.base_kernel.lengthscale.detach().reshape(3)
        exact = rbf_apply(x, z, gamma, weights * alpha).numpy()
        centre, spread = rbf_apply_mixed(x, z, gamma, mean * alpha, ((weights - mean[:, None]) * alpha).float())
        mixed = (spread + centre.float()[:, None]).numpy()
    error = np.abs(mixed - exact)
    sigma = exact.std(axis=1)
    relative = error / sigma[:, None]
    shifts = {}
    for p in (0.16, 0.5, 0.84):
        moved = np.abs(np.quantile(mixed, p, axis=1) - np.quantile(exact, p, axis=1))
        pdf = NormalDist().pdf(NormalDist().inv_cdf(p))  # of the standardised draws, taken as Gaussian
        standard_error = math.sqrt(p * (1 - p) / args.samples) / pdf * sigma
        shifts[f"p{round(100 * p)}"] = {
            "max_over_standard_error": float((moved / standard_error).max()),
            "p999_over_standard_error": float(np.quantile(moved / standard_error, 0.999)),
            "max_dex": float(moved.max()),
        }
    result = {
        "cells": int(picked.size),
        "samples": args.samples,
        "error_max_dex": float(error.max()),
        "error_p999_dex": float(np.quantile(error, 0.999)),
        "error_over_sigma_max": float(relative.max()),
        "error_over_sigma_p999": float(np.quantile(relative, 0.999)),
        "sigma_median_dex": float(np.median(sigma)),
        "sigma_min_dex": float(sigma.min()),
        "percentile_shifts": shifts,
    }
    print(f"{'cells':>8} {'max err dex':>12} {'p99.9 dex':>10} {'max err/σ':>10} {'p99.9 err/σ':>12} {'median σ':>9}")
    print(
        f"{result['cells']:8d} {result['error_max_dex']:12.2e} {result['error_p999_dex']:10.2e} "
        f"{result['error_over_sigma_max']:10.2e} {result['error_over_sigma_p999']:12.2e} "
        f"{result['sigma_median_dex']:9.3f}"
    )
    for name, s in shifts.items():
        print(
            f"{name}: moved by at most {s['max_over_standard_error']:.3f} Monte Carlo standard errors "
            f"({s['max_dex']:.1e} dex)"
        )
    write_record("bench_predict_precision", args, (load_before, os.getloadavg()), **result)


if __name__ == "__main__":
    main()
