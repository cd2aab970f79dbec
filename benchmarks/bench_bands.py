"""Where the bands miss: the clean twin of ``bench_likelihood.py`` by distance from its structures.

On the realistic mock's clean twin (true distances, no outliers, the paper's Gaussian likelihood) the 16-84% density
band holds the truth in ~18% of cells and the extinction band in ~28% of points (nominal 68%), although the stars'
own predictive intervals hold ~61% of them: the map is confidently wrong between the stars, not at them. This script
says where, for fits that differ only in the number of inducing points M:

* cells binned by their distance (in prediction cells) from the nearest structure cell (true density above
  twice the background): coverage, median predicted log10 density against the truth, median band
  half-width in dex;
* "holes": cells whose predicted median lies more than 1 dex below a background truth (the RBF prior's undershoot
  next to sharp structures, which the stars cannot see: 10^-4.5 and 10^-3.5 mag/pc differ by < 0.01 mag over 30 pc);
* the same by distance from the Sun: background cells' median log10 error and share of holes per distance range,
  and the stars' mean residual (observed - predicted extinction, mag) per range of true distance, with its
  standard error;
* extinction: the band's median width against the median absolute error.

Fits are cached (``bench_likelihood.checkpoint_for``, shared with ``bench_likelihood.py --inducing-points M``
and its sky options); a cached fit is only predicted again.

    .venv/bin/python benchmarks/bench_bands.py --inducing-points 500 1000
    .venv/bin/python benchmarks/bench_bands.py --inducing-points 500 --structure-size 2 --background 1.6e-3 \
        --out benchmarks/results/bands-twin-resolved.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

import dustgp
from bench_likelihood import CASES, CHECKPOINTS, FIT, PREDICT, TRAIN, checkpoint_for, mock, structure_peaks
from bench_scaling import machine, versions
from dustgp.simulate import REALISTIC_BACKGROUND
from dustgp.validation import compare_to_truth

HERE = Path(__file__).resolve().parent
#: A cell is part of a structure where its true density exceeds this many times the background
STRUCTURE_CONTRAST = 2.0
#: Distance bins from the nearest structure cell, in prediction cells (0: the structure itself)
BINS = ((0, 0), (1, 2), (3, 4), (5, 8), (9, 10**6))
#: Ranges of distance from the Sun, pc, for the breakdown by distance
RANGES = ((180, 260), (260, 340), (340, 420), (420, 500))


def by_distance(
    d_cells: np.ndarray, error: np.ndarray, background: np.ndarray, d_stars: np.ndarray, residual: np.ndarray
) -> list[dict[str, Any]]:
    """Background cells' log10 error and holes, and the stars' mean residual, per range of distance (pc)."""
    rows = []
    for near, far in RANGES:
        cells = background & (d_cells >= near) & (d_cells < far)
        stars = (d_stars >= near) & (d_stars < far)
        rows.append(
            {
                "distance_pc": [near, far],
                "background_cells": int(cells.sum()),
                "median_log10_error": float(np.median(error[cells])),
                "holes": float(np.mean(error[cells] < -1.0)),
                "stars": int(stars.sum()),
                "mean_residual_mag": float(np.mean(residual[stars])),
                "residual_standard_error_mag": float(np.std(residual[stars]) / np.sqrt(max(stars.sum(), 1))),
            }
        )
    return rows


def diagnose(m: int, seed: int, background: float = REALISTIC_BACKGROUND, size: float = 1.0) -> dict[str, Any]:
    sky = mock(seed, False, background, size)
    options = {**FIT, **CASES["twin"][1], "inducing_points": m}
    checkpoint = checkpoint_for("twin", seed, m, background, size)
    CHECKPOINTS.mkdir(exist_ok=True)
    where = {"resume": checkpoint} if checkpoint.exists() else {"checkpoint": checkpoint}
    fitted = dustgp.fit(sky.catalog, TRAIN, progress=False, seed=seed, **options, **where)
    t0 = time.perf_counter()
    dmap = fitted.predict(PREDICT, samples=100, progress=False)
    predict_seconds = time.perf_counter() - t0
    region = dmap.region_slice
    truth = sky.density_on(dmap.grid)[region]
    lo, median, hi = (dmap.density(q).value[region] for q in (16, 50, 84))
    log_truth, log_median = np.log10(truth), np.log10(median)
    half_width = 0.5 * np.log10(hi / lo)
    inside = (truth >= lo) & (truth <= hi)
    structure = truth > STRUCTURE_CONTRAST * sky.background
    cells_away = ndimage.distance_transform_edt(~structure)
    bins = []
    for near, far in BINS:
        chosen = (cells_away >= near) & (cells_away <= far)
        if chosen.any():
            bins.append(
                {
                    "cells_from_structure": [near, far],
                    "n_cells": int(chosen.sum()),
                    "coverage_16_84": float(inside[chosen].mean()),
                    "median_log10_predicted": float(np.median(log_median[chosen])),
                    "median_log10_truth": float(np.median(log_truth[chosen])),
                    "median_band_half_width_dex": float(np.median(half_width[chosen])),
                }
            )
    in_background = ~structure
    d_cells = dmap.grid.cell_centers_lbd()[2][region]
    checks = fitted.star_checks
    rows = np.asarray(checks["row_index"])
    residual = sky.catalog.extinction[rows] - np.asarray(checks["predicted"], float)
    a_truth = sky.extinction_on(dmap.grid)[region]
    a_lo, a_median, a_hi = (dmap.extinction(q).value[region] for q in (16, 50, 84))
    return {
        "inducing_points": m,
        "seed": seed,
        "background": background,
        "structure_size": size,
        "steps": fitted.iterations,
        "converged": fitted.converged,
        "fit_seconds": fitted.seconds,
        "predict_seconds": predict_seconds,
        "hyperparameters": fitted.hyperparameters(),
        "truth": compare_to_truth(dmap, sky).to_dict(),
        "holes_fraction_of_background": float(np.mean(log_median[in_background] < log_truth[in_background] - 1.0)),
        "by_distance_from_structure": bins,
        "by_distance_from_sun": by_distance(
            d_cells, log_median - log_truth, in_background, sky.catalog.distance[rows], residual
        ),
        "extinction_band_width_median_mag": float(np.median(a_hi - a_lo)),
        "extinction_abs_error_median_mag": float(np.median(np.abs(a_median - a_truth))),
        "peaks": structure_peaks(dmap, sky),
    }


def print_rows(rows: list[dict[str, Any]]) -> None:
    head = (("M", 5), ("steps", 5), ("med err", 8), ("cov rho", 8))
    head += (("cov A", 6), ("holes", 6), ("A band", 7), ("A err", 7))
    print(" ".join(f"{name:>{width}s}" for name, width in head))
    for r in rows:
        t = r["truth"]
        print(
            f"{r['inducing_points']:5d} {r['steps']:5d} {t['median_relative_error']:8.1%} {t['coverage_16_84']:8.1%} "
            f"{t['extinction_coverage_16_84']:6.1%} {r['holes_fraction_of_background']:6.1%} "
            f"{r['extinction_band_width_median_mag']:7.4f} {r['extinction_abs_error_median_mag']:7.4f}"
        )
        for b in r["by_distance_from_structure"]:
            near, far = b["cells_from_structure"]
            span = f"{near}" if near == far else f"{near}-{far}" if far < 10**6 else f">={near}"
            print(
                f"      {span:>6s} cells from a structure: n={b['n_cells']:6d} cov {b['coverage_16_84']:6.1%} "
                f"log10 rho {b['median_log10_predicted']:6.2f} (truth {b['median_log10_truth']:6.2f}) "
                f"band ±{b['median_band_half_width_dex']:.3f} dex"
            )
        for b in r["by_distance_from_sun"]:
            near, far = b["distance_pc"]
            print(
                f"      {near}-{far} pc: background log10 error {b['median_log10_error']:+6.2f} dex, holes "
                f"{b['holes']:6.1%}; stars' mean residual {b['mean_residual_mag']:+.4f} "
                f"± {b['residual_standard_error_mag']:.4f} mag (n={b['stars']})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inducing-points", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--background", type=float, default=REALISTIC_BACKGROUND, help="mock background, mag/pc")
    parser.add_argument("--structure-size", type=float, default=1.0, help="the structures' widths times this")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bands-twin.json")
    args = parser.parse_args()
    rows = [diagnose(m, args.seed, args.background, args.structure_size) for m in args.inducing_points]
    print_rows(rows)
    record = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "benchmarks/bench_bands.py --inducing-points "
        + " ".join(str(m) for m in args.inducing_points)
        + f" --seed {args.seed} --background {args.background:g} --structure-size {args.structure_size:g}",
        "machine": {**machine(), "torch_threads": torch.get_num_threads()},
        "versions": versions(),
        "structure_contrast": STRUCTURE_CONTRAST,
        "rows": rows,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
