"""Real stars, real errors: the likelihoods on a realistic mock, side by side with its clean twin.

The mock (``dustgp.simulate(structures="realistic")`` on the paper's Section 3 region): a near sheet, an elongated
filament, a dense compact core and a far clump over a low background; 60,000 stars; Gaia-like fractional distance
errors of 5-20% (the catalogue distance scattered, the error reported); 3% outliers of +0.3-1.5 mag with unchanged
sigma; sigma_A = sqrt(0.05² + (0.05 A)²). Its clean twin is the same sky with true distances and no outliers: the
information floor. Every case is fitted with ``method="newton"`` on the Section 3 training grid (20×20×35 + 2
ghost cells, 1000 inducing points), predicted on a 50×50×52 grid with 100 samples, and scored against the truth:

* density: median and 90th percentile of |rho/rho_true - 1|, share of cells with the truth inside the 16-84% band;
* extinction: share of cells whose true extinction (to the cell's far edge) lies inside the 16-84% band;
* both coverages also weighted by cell volume (``vol rho``, ``vol A``): the share of random points in the volume;
* structures: the distance of the posterior-median density peak along each structure's own sightline, against
  the true one (within one training cell?);
* stars: the posterior predictive checks (share inside their predictive 16-84% interval, KS distance of the
  normalised residuals to N(0, 1)) and, where the likelihood has an outlier class, recall and false flags.

Cases: ``twin`` (Gaussian, the paper's), ``twin-robust`` (the default likelihood on clean data: what robustness
costs), and on the realistic mock ``default`` (mixture + distance quadrature), ``student-t`` (+ quadrature),
``moment`` (mixture + the moment-matched distance treatment), ``volume-prior`` (the default with the catalogue's
distances read as measurements under a uniform space density, ``Catalog.with_volume_prior``),
``volume-objective`` (the same, with the stars' missing information counted in the objective:
``missing_information="objective"``), ``inflate`` (Gaussian + the catalogue's neighbour inflation, the old default)
and ``gaussian`` (Gaussian, distance errors ignored).

``--scale`` instead times the per-star part of one outer step (latent update, node statistics, column blocks) for
10⁶ stars with K = 8 distance nodes on the 97,600-cell grid of ``bench_newton_scale.py``.

    .venv/bin/python benchmarks/bench_likelihood.py --seeds 1
    .venv/bin/python benchmarks/bench_likelihood.py --seeds 2 3 --cases twin default
    .venv/bin/python benchmarks/bench_likelihood.py --cases twin default --inducing-points 500 \
        --out benchmarks/results/likelihood-m500-seed1.json
    .venv/bin/python benchmarks/bench_likelihood.py --scale --baseline ade638e   # side by side with a revision
    .venv/bin/python benchmarks/bench_likelihood.py --seeds 1 2 3 --cases twin twin-robust default gaussian \
        inflate volume-prior --structure-size 2 --background 1.6e-3 \
        --out benchmarks/results/likelihood-resolved-edges-m1000.json
    .venv/bin/python benchmarks/bench_likelihood.py --seeds 1 2 3 --cases gaussian inflate default \\
        --structure-size 2 --background 1.6e-3 --out benchmarks/results/likelihood-resolved-edges-m1000-greedy-side.json
    .venv/bin/python benchmarks/bench_likelihood.py --seeds 1 2 3 --cases volume-objective --structure-size 2 \\
        --background 1.6e-3 --out benchmarks/results/likelihood-resolved-edges-m1000-objective.json

``--training-cells N_L N_B N_D`` fits on another training grid over the same region (default 20 20 35; the fits are
cached apart, ``-t<N_L>x<N_B>x<N_D>`` in the name):

    .venv/bin/python benchmarks/bench_likelihood.py --seeds 1 2 3 --cases twin volume-prior volume-objective \\
        --structure-size 2 --background 1.6e-3 --training-cells 40 40 35 \\
        --out benchmarks/results/likelihood-resolved-edges-m1000-t40x40x35.json

Records made before the default M became 1000 say theirs in ``fit``; those before the sheet's sky edges widened
with ``--structure-size`` (``likelihood-resolved*.json`` without ``-edges``) are of a sky whose sheet ends within
0.8 deg, inside one training column.

``--structure-size`` and ``--background`` change the mock's sky (``simulate(structure_size=...)``, mag/pc): at the
default size the sheet, filament and core are thinner than one training cell. ``--distance-errors F_MIN F_MAX``
changes the realistic mock's fractional distance errors (default 0.05 0.20; the twin has none): what the distance
errors alone cost, against the same twin. Its fits are cached apart (``-f<F_MIN>-<F_MAX>`` in the name):

    .venv/bin/python benchmarks/bench_likelihood.py --seeds 1 2 3 --cases twin volume-prior --structure-size 2 \
        --background 1.6e-3 --distance-errors 0.0125 0.05 \
        --out benchmarks/results/likelihood-resolved-edges-m1000-f-quarter.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import dustgp
from baseline import CURRENT_SRC, measure_in, revision_src
from bench_scaling import machine, versions
from dustgp.catalog import lognormal_nodes
from dustgp.fitting import INTERRUPTED
from dustgp.grid import Grid
from dustgp.likelihood import StarLikelihood, StarNodes
from dustgp.sightlines import cell_extinction_moments
from dustgp.simulate import REALISTIC_BACKGROUND, simulate
from dustgp.validation import compare_to_truth

HERE = Path(__file__).resolve().parent
CHECKPOINTS = Path(tempfile.gettempdir()) / "dustgp-bench-likelihood"
REGION = {"l": (50.0, 90.0), "b": (-10.0, 10.0), "d": (180.0, 500.0)}
TRUTH = Grid(l=(*REGION["l"], 100), b=(*REGION["b"], 100), d=(*REGION["d"], 115), ghost_cells=0)
#: Training cells in (l, b, d): the paper's Section 3 grid
TRAINING_CELLS = (20, 20, 35)


def training_grid(cells: tuple[int, int, int] = TRAINING_CELLS) -> Grid:
    """The training grid over the region with ``cells`` = (n_l, n_b, n_d) cells and 2 ghost cells."""
    n_l, n_b, n_d = cells
    return Grid(l=(*REGION["l"], n_l), b=(*REGION["b"], n_b), d=(*REGION["d"], n_d), ghost_cells=2)


TRAIN = training_grid()
PREDICT = Grid(l=(*REGION["l"], 50), b=(*REGION["b"], 50), d=(*REGION["d"], 52), ghost_cells=2)
MOCK = {
    "n_stars": 60_000,
    "structures": "realistic",
    "noise": 0.05,
    "noise_floor": 0.05,
}
REALISTIC = {"distance_errors": (0.05, 0.20), "outlier_fraction": 0.03, "outlier_amplitude": (0.3, 1.5)}
DISTANCE_ERRORS: tuple[float, float] = REALISTIC["distance_errors"]
FIT = {"inducing_points": 1000, "length_scale": 20.0, "method": "newton"}
CASES: dict[str, tuple[bool, dict[str, Any]]] = {  # (realistic mock?, fit options)
    "twin": (False, {"likelihood": "gaussian", "error_floor": 0.0}),
    "twin-robust": (False, {}),
    "default": (True, {}),
    "student-t": (True, {"likelihood": "student-t"}),
    "moment": (True, {"distance_uncertainty": "moment"}),
    "inflate": (True, {"likelihood": "gaussian", "distance_uncertainty": "inflate"}),
    "gaussian": (True, {"likelihood": "gaussian", "distance_uncertainty": "none"}),
    "volume-prior": (True, {}),
    "volume-objective": (True, {"missing_information": "objective"}),
}
#: Cases whose catalogue distances are read as measurements under a uniform space density
#: (``Catalog.with_volume_prior``), as the simulator's are
VOLUME_PRIOR = {"volume-prior", "volume-objective"}


def structure_peaks(dmap: Any, sky: Any) -> dict[str, dict[str, float]]:
    """Distance of the median-density peak on each structure's sightline, against the truth, pc."""
    out = {}
    grid = dmap.grid
    region = dmap.region_slice
    median = dmap.density(50).value
    d = grid.d_centers[region]
    for structure in sky.structures:
        l, b = structure.sightline()
        _, i_b, i_l = grid.locate(np.array([l]), np.array([b]), np.array([grid.d_min + 1.0]))
        profile = median[region, int(i_b[0]), int(i_l[0])]
        found = float(d[int(np.argmax(profile))])
        true = float(sky.peak_distance(structure.name))
        out[structure.name] = {"true_pc": true, "found_pc": found, "error_pc": found - true}
    return out


def score_stars(fitted: Any, sky: Any) -> dict[str, Any]:
    summary = fitted.posterior_predictive()
    table = fitted.star_checks
    if table is not None and sky.outlier.any():
        truth = sky.outlier[np.asarray(table["row_index"])]
        flagged = np.asarray(table["flagged"], bool)
        summary["outlier_recall"] = float(np.sum(flagged & truth) / max(truth.sum(), 1))
        summary["false_flags"] = int(np.sum(flagged & ~truth))
    return summary


def mock(
    seed: int,
    realistic: bool,
    background: float = REALISTIC_BACKGROUND,
    size: float = 1.0,
    distance_errors: tuple[float, float] = DISTANCE_ERRORS,
) -> Any:
    """The realistic mock (``realistic=True``, fractional distance errors ``distance_errors``) or its clean twin,
    with the structures ``size`` times as wide."""
    options = {**MOCK, "structure_size": size, "background": background}
    if realistic:
        options |= {**REALISTIC, "distance_errors": tuple(distance_errors)}
    return simulate(TRUTH, seed=seed, **options)


def checkpoint_for(
    name: str,
    seed: int,
    inducing_points: int,
    background: float = REALISTIC_BACKGROUND,
    size: float = 1.0,
    distance_errors: tuple[float, float] = DISTANCE_ERRORS,
    training_cells: tuple[int, int, int] = TRAINING_CELLS,
) -> Path:
    """Where a case's finished fit is cached (shared with ``bench_bands.py``)."""
    sky_tag = "" if (background, size) == (REALISTIC_BACKGROUND, 1.0) else f"-bg{background:g}-size{size:g}"
    if CASES[name][0] and tuple(distance_errors) != DISTANCE_ERRORS:  # the twin has none to tag
        sky_tag += "-f{:g}-{:g}".format(*distance_errors)
    if tuple(training_cells) != TRAINING_CELLS:
        sky_tag += "-t{}x{}x{}".format(*training_cells)
    return CHECKPOINTS / f"{name}-seed{seed}-m{inducing_points}{sky_tag}.ckpt"


def run_case(
    name: str,
    seed: int,
    inducing_points: int = FIT["inducing_points"],
    background: float = REALISTIC_BACKGROUND,
    size: float = 1.0,
    distance_errors: tuple[float, float] = DISTANCE_ERRORS,
    training_cells: tuple[int, int, int] = TRAINING_CELLS,
) -> dict[str, Any]:
    CHECKPOINTS.mkdir(exist_ok=True)
    train = training_grid(training_cells)
    realistic, options = CASES[name]
    fit_options = {**FIT, "inducing_points": inducing_points, **options}
    sky = mock(seed, realistic, background, size, distance_errors)
    catalog = sky.catalog.with_volume_prior() if name in VOLUME_PRIOR else sky.catalog
    t0 = time.perf_counter()
    # a finished fit is not fitted again when the run is repeated
    checkpoint = checkpoint_for(name, seed, inducing_points, background, size, distance_errors, training_cells)
    where = {"resume": checkpoint} if checkpoint.exists() else {"checkpoint": checkpoint}
    fitted = dustgp.fit(catalog, train, progress=False, seed=seed, **where, **fit_options)
    if fitted.stopped_by in INTERRUPTED:  # Ctrl-C or SIGTERM: the checkpoint is saved; score nothing half-fitted
        raise SystemExit(f"{name}, seed {seed}: fit {fitted.stopped_by} after {fitted.iterations} steps")
    fit_seconds = fitted.seconds
    t0 = time.perf_counter()
    dmap = fitted.predict(PREDICT, samples=100, progress=False)
    predict_seconds = time.perf_counter() - t0
    truth = compare_to_truth(dmap, sky)
    peaks = structure_peaks(dmap, sky)
    cell = float(train.path_lengths[-1])
    return {
        "case": name,
        "seed": seed,
        "realistic": realistic,
        "options": options,
        "inducing_points": inducing_points,
        "background": background,
        "structure_size": size,
        "distance_errors": list(distance_errors) if realistic else None,
        "training_cells": list(training_cells),
        "steps": fitted.iterations,
        "converged": fitted.converged,
        "fit_seconds": fit_seconds,
        "predict_seconds": predict_seconds,
        "truth": truth.to_dict(),
        "peaks": peaks,
        "peaks_within_one_training_cell": all(abs(p["error_pc"]) <= cell for p in peaks.values()),
        "training_cell_pc": cell,
        "stars": score_stars(fitted, sky),
        "hyperparameters": fitted.hyperparameters(),
    }


def scale_row(n_stars: int = 1_000_000, k: int = 8, learn_scatter: bool = False) -> dict[str, Any]:
    """Seconds and memory of the per-star part of one outer step at 10⁶ stars × K nodes."""
    grid = Grid(l=(50, 90, 61), b=(-10, 10, 40), d=(180, 500, 38), ghost_cells=2)  # 97,600 cells
    rng = np.random.default_rng(0)
    l, b = rng.uniform(50, 90, n_stars), rng.uniform(-10, 10, n_stars)
    d = 180.0 + 320.0 * rng.uniform(0, 1, n_stars) ** (1 / 3)
    a = 0.002 * (d - 100.0) + rng.normal(0, 0.05, n_stars)
    t0 = time.perf_counter()
    nodes = StarNodes.build(grid, l, b, *lognormal_nodes(d, 0.1 * d, k))
    like = StarLikelihood(nodes, a, np.full(n_stars, 0.05), noise="mixture", learn_scatter=learn_scatter)
    setup = time.perf_counter() - t0
    mean = torch.full((grid.n_columns, grid.n_d), -2.7, dtype=torch.float64)
    cov = 0.01 * torch.eye(grid.n_d, dtype=torch.float64).expand(grid.n_columns, -1, -1).contiguous()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        moments = cell_extinction_moments(mean, cov, torch.as_tensor(grid.path_lengths))
        like.update(moments)
        stats = like.statistics()
        stats.column_blocks()
        times.append(time.perf_counter() - t0)
    try:  # once per fit, at its end; a baseline revision from before it has none
        from dustgp.fitting.missing_information import missing_information_blocks
    except ImportError:
        missing_seconds = None
    else:
        t0 = time.perf_counter()
        missing_information_blocks(like, like.node_moments(moments)[0])
        missing_seconds = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return {
        "n_stars": n_stars,
        "nodes_per_star": k,
        "node_stars": len(nodes),
        "cells": grid.n_cells,
        "setup_seconds": setup,
        "seconds_per_outer_step": times,
        "median_seconds": float(np.median(times)),
        "missing_information_seconds": missing_seconds,
        "peak_rss_gb": peak_gb,
        "learn_scatter": learn_scatter,
        "scatter": list(like.scatter),
    }


def print_rows(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'case':12s} {'seed':>4s} {'steps':>5s} {'conv':>5s} {'fit s':>7s} {'med err':>8s} {'q90':>7s} "
        f"{'cov rho':>8s} {'cov A':>6s} {'vol rho':>8s} {'vol A':>6s} "
        f"{'peaks':>6s} {'PPC in':>7s} {'KS':>6s} {'recall':>7s} {'false':>6s}"
    )
    print(head)
    for r in rows:
        t, s = r["truth"], r["stars"]
        print(
            f"{r['case']:12s} {r['seed']:4d} {r['steps']:5d} {r['converged']!s:>5s} {r['fit_seconds']:7.0f} "
            f"{t['median_relative_error']:8.2%} {t['p90_relative_error']:7.1%} {t['coverage_16_84']:8.1%} "
            f"{t['extinction_coverage_16_84']:6.1%} {t.get('volume_coverage_16_84', float('nan')):8.1%} "
            f"{t.get('volume_extinction_coverage_16_84', float('nan')):6.1%} "
            f"{r['peaks_within_one_training_cell']!s:>6s} "
            f"{s.get('inside_16_84', float('nan')):7.1%} {s.get('ks_statistic', float('nan')):6.3f} "
            f"{s.get('outlier_recall', float('nan')):7.1%} {s.get('false_flags', -1):6d}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--scale", action="store_true", help="time the per-star terms at 10^6 stars x 8 nodes")
    parser.add_argument("--baseline", help="with --scale: also time this git revision's code, side by side")
    parser.add_argument(
        "--learn-scatter", action="store_true", help="with --scale: also time it with the model scatter learned"
    )
    parser.add_argument(
        "--inducing-points", type=int, default=FIT["inducing_points"], help="M of every fit (default %(default)s)"
    )
    parser.add_argument(
        "--background", type=float, default=REALISTIC_BACKGROUND, help="mock background, mag/pc (default %(default)s)"
    )
    parser.add_argument(
        "--structure-size", type=float, default=1.0, help="the structures' widths times this (default %(default)s)"
    )
    parser.add_argument(
        "--distance-errors",
        type=float,
        nargs=2,
        default=DISTANCE_ERRORS,
        metavar=("F_MIN", "F_MAX"),
        help="range of the realistic mock's fractional distance errors (default %(default)s)",
    )
    parser.add_argument(
        "--training-cells",
        type=int,
        nargs=3,
        default=TRAINING_CELLS,
        metavar=("N_L", "N_B", "N_D"),
        help="training cells in l, b, d over the region, plus 2 ghost cells (default %(default)s)",
    )
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/likelihood-*.json)")
    args = parser.parse_args()
    record: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "torch_threads": torch.get_num_threads()},
        "versions": versions(),
    }
    if args.scale:
        code = "import json\nfrom bench_likelihood import scale_row\nprint(json.dumps(scale_row()))"
        row = measure_in(CURRENT_SRC, code)
        record["scale"] = row
        if args.baseline:
            with revision_src(args.baseline) as src:
                record["baseline"] = {"revision": args.baseline, "scale": measure_in(src, code)}
            record["speedup_median"] = record["baseline"]["scale"]["median_seconds"] / row["median_seconds"]
        if args.learn_scatter:
            learned = measure_in(CURRENT_SRC, code.replace("scale_row()", "scale_row(learn_scatter=True)"))
            record["scale_learn_scatter"] = learned
            record["learn_scatter_cost_ratio"] = learned["median_seconds"] / row["median_seconds"]
        shown = ("scale", "baseline", "speedup_median", "scale_learn_scatter", "learn_scatter_cost_ratio")
        print(json.dumps({k: v for k, v in record.items() if k in shown}, indent=2))
        out = args.out or HERE / "results" / "likelihood-scale.json"
    else:
        fit = {**FIT, "inducing_points": args.inducing_points}
        errors = tuple(args.distance_errors)
        sky = {"background": args.background, "structure_size": args.structure_size, "distance_errors": errors}
        cells = tuple(args.training_cells)
        train = repr(training_grid(cells))
        record |= {"mock": {**MOCK, **REALISTIC, **sky}, "train": train, "predict": repr(PREDICT), "fit": fit}
        rows = []
        for seed in args.seeds:
            for name in args.cases:
                size = args.structure_size
                rows.append(run_case(name, seed, args.inducing_points, args.background, size, errors, cells))
                print_rows(rows[-1:])
                print(json.dumps(rows[-1], default=str), flush=True)
        record["rows"] = rows
        print()
        print_rows(rows)
        tag = "-".join(str(s) for s in args.seeds)
        out = args.out or HERE / "results" / f"likelihood-seeds{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
