"""How training and prediction scale with stars, cells, inducing points and dtype, against a plain GPyTorch + Pyro
baseline measured side by side.

Usage::

    .venv/bin/python benchmarks/bench_scaling.py                 # full sizes (minutes; run on a quiet machine)
    .venv/bin/python benchmarks/bench_scaling.py --quick         # tiny smoke run (well under a minute)
    .venv/bin/python benchmarks/bench_scaling.py --skip baseline prediction --out /tmp/scaling.json

Prints a table and writes ``benchmarks/results/scaling.json`` (``scaling-quick.json`` with ``--quick``): machine,
versions, threads, load average, every row and the fitted exponents.

What is measured
----------------
* **Seconds per training iteration**: ``dustgp.fit(..., max_iterations=warmup + iterations, stop="none",
  progress=False)`` with ``pyro.infer.SVI.step`` wrapped by a timer; the median (and minimum) over the iterations
  after ``warmup``. The map-convergence check that ``fit`` runs every 25 iterations is not in the step time. If
  ``fit`` ever stops calling ``SVI.step``, the row falls back to ``fit.seconds / fit.iterations`` and says so.
* **Set-up seconds**: wall time of ``fit`` outside its training loop (locating stars, the sufficient statistics
  H and g, inducing-point initialisation, building the model). On the stars axis, ``statistics_s`` times the
  star-dependent part alone (:class:`~dustgp.sightlines.Sightlines` plus
  :class:`~dustgp.sightlines.GaussianStatistics`). Stars change only this one-off cost: the likelihood of all
  stars enters each iteration through H and g (docs: Design notes).
* **Peak memory**: the process's peak resident set (``VmHWM``) after resetting it through
  ``/proc/self/clear_refs`` before each row (Linux), reported in MB both as the peak and as the increase over
  the resident set at the row's start (``delta_mb``, after a garbage collection and glibc's ``malloc_trim``, so
  that memory freed by earlier rows does not hide this row's); elsewhere ``ru_maxrss``, which only grows over
  the run (so is marked ``cumulative``). The increase counts numpy and torch CPU allocations alike.
* **Prediction**: seconds per 10⁶ prediction cells of ``Fit.predict`` (``samples`` joint draws, percentiles,
  extinction integrals) on the paper's 100 × 100 × 105 grid plus two ghost cells.
* **Combined**: the largest star count and the largest training grid of the axes above in one row (10⁶ stars
  with about 10⁵ cells at full size), M = 1000.
* **Scaling exponents**: the least-squares slope of log(time) against log(size) along each axis.
* **Baseline**: the straightforward GPyTorch + Pyro formulation, as in GPyTorch's Pyro-integration examples: an
  ``ApproximateGP`` with ``CholeskyVariationalDistribution`` and ``VariationalStrategy`` (whitened), its
  ``pyro_model`` / ``pyro_guide`` (the inducing values ``u`` sampled from q(u) and p(u); the latent f sampled in
  a plate over cells from ``Normal(mean, stddev)`` of q(f), i.e. independent per-cell marginals), density
  ``10**f``, model extinction ``W @ rho`` with the sparse sightline matrix ``Sightlines.matrix()``, a Gaussian
  likelihood over all stars, ``Trace_ELBO`` with 32 vectorised particles. It runs on the same stars, grid,
  inducing points and dtype as the dustgp row next to it (the Section 3 size: 120k stars, 20 × 20 × 35 cells plus
  2 ghost cells, M = 1000), and the speed-up is the ratio of their median seconds per iteration.

Timings on a shared machine are only as good as its quiet: the load average before and after is recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import gc
import json
import math
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gpytorch
import numpy as np
import pyro
import pyro.distributions as pdist
import torch
from gpytorch.variational import CholeskyVariationalDistribution, VariationalStrategy
from pyro.infer import SVI, Trace_ELBO

import dustgp
from dustgp import Catalog, Grid, simulate
from dustgp.grid import lbd_to_xyz
from dustgp.sightlines import GaussianStatistics, Sightlines

RESULTS = Path(__file__).resolve().parent / "results" / "scaling.json"
#: --quick writes here by default, so that a smoke run never overwrites the full-size results
QUICK_RESULTS = RESULTS.with_name("scaling-quick.json")

#: The paper's Section 3 experiment (docs: Method §9): region, training grid, stars, inducing points.
REGION = {"l": (50.0, 90.0), "b": (-10.0, 10.0), "d": (180.0, 500.0)}
SECTION3 = {"shape": (20, 20, 35), "ghost_cells": 2, "stars": 120_000, "inducing": 1000}

FULL = {
    "stars": [10_000, 100_000, 1_000_000],
    "cells": [10_000, 20_000, 50_000, 100_000],
    "inducing": [500, 1000, 2000, 4000],
    "dtypes": ["float32", "float64"],
    "iterations": 10,
    "warmup": 3,
    "truth_shape": (100, 100, 115),
    "prediction_shape": (100, 100, 105),
    "prediction_samples": 200,
    "reference": SECTION3,
}
QUICK = {
    "stars": [2_000, 20_000],
    "cells": [600, 2_400],
    "inducing": [32, 128],
    "dtypes": ["float32", "float64"],
    "iterations": 3,
    "warmup": 1,
    "truth_shape": (30, 30, 30),
    "prediction_shape": (20, 20, 20),
    "prediction_samples": 50,
    "reference": {"shape": (8, 8, 10), "ghost_cells": 2, "stars": 5_000, "inducing": 64},
}
AXES = ("stars", "cells", "inducing", "dtype", "prediction", "baseline", "combined")


# ------------------------------------------------------------------------------------------------------------
# Memory and timing helpers


def _status_kb(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, flags=re.MULTILINE)
    return int(match.group(1)) if match else None


def _reset_peak() -> bool:
    """Reset the peak resident set (Linux ≥ 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc ``malloc_trim``), so that the resident set at the
    start of a row is what is alive then, not what earlier rows freed but the allocator kept."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def memory_probe() -> Iterator[dict[str, Any]]:
    """Peak resident memory of the enclosed block, MB: ``peak_mb`` and ``delta_mb`` (over the start)."""
    _release_free_memory()
    record: dict[str, Any] = {}
    resettable = _reset_peak()
    start_kb = _status_kb("VmRSS") if resettable else None
    try:
        yield record
    finally:
        if resettable and start_kb is not None:
            peak_kb = _status_kb("VmHWM") or 0
            record.update(peak_mb=peak_kb / 1024, delta_mb=(peak_kb - start_kb) / 1024, memory_method="VmHWM reset")
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
            peak_mb = peak / 1024 / (1024 if sys.platform == "darwin" else 1)
            record.update(peak_mb=peak_mb, delta_mb=None, memory_method="ru_maxrss (cumulative)")


@contextlib.contextmanager
def svi_step_timer() -> Iterator[list[float]]:
    """Record the wall time of every ``pyro.infer.SVI.step`` call made inside the block."""
    times: list[float] = []
    original = SVI.step

    def timed(self: SVI, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = original(self, *args, **kwargs)
        times.append(time.perf_counter() - start)
        return out

    SVI.step = timed  # type: ignore[method-assign]
    try:
        yield times
    finally:
        SVI.step = original  # type: ignore[method-assign]


def summarise_steps(times: list[float], warmup: int) -> dict[str, Any]:
    timed = times[warmup:] or times
    return {
        "per_iteration_s": statistics.median(timed),
        "per_iteration_min_s": min(timed),
        "iterations_timed": len(timed),
        "step_times_s": timed,
    }


# ------------------------------------------------------------------------------------------------------------
# Problems


def region_grid(shape: tuple[int, int, int], ghost_cells: int) -> Grid:
    n_l, n_b, n_d = shape
    return Grid(l=(*REGION["l"], n_l), b=(*REGION["b"], n_b), d=(*REGION["d"], n_d), ghost_cells=ghost_cells)


def shape_for_cells(target: int, reference: dict[str, Any]) -> tuple[int, int, int]:
    """The reference grid shape scaled on every axis so that its cells (ghosts included) come near ``target``."""
    n_l, n_b, n_d = reference["shape"]
    g = reference["ghost_cells"]
    factor = (target / (n_l * n_b * (n_d + g))) ** (1 / 3)
    return max(2, round(n_l * factor)), max(2, round(n_b * factor)), max(2, round(n_d * factor))


class Stars:
    """One simulated sky of the largest size needed; smaller catalogues are its first n stars (stars are iid)."""

    def __init__(self, n_max: int, truth_shape: tuple[int, int, int], seed: int) -> None:
        start = time.perf_counter()
        sky = simulate(region_grid(truth_shape, 0), n_stars=n_max, seed=seed)
        self.seconds = time.perf_counter() - start
        cat = sky.catalog
        self.arrays = [np.asarray(a) for a in (cat.l, cat.b, cat.distance, cat.extinction, cat.extinction_err)]

    def catalog(self, n: int) -> Catalog:
        l, b, d, a, s = (x[:n] for x in self.arrays)
        return Catalog(l, b, d, a, s)


# ------------------------------------------------------------------------------------------------------------
# dustgp


def measure_dustgp(
    catalog: Catalog,
    grid: Grid,
    *,
    inducing: int,
    dtype: str,
    iterations: int,
    warmup: int,
    particles: int,
    seed: int,
    statistics_time: bool = False,
) -> tuple[dict[str, Any], Any]:
    """One training measurement; returns the row and the fit (for prediction timing)."""
    row: dict[str, Any] = {
        "method": "dustgp",
        "stars": len(catalog),
        "cells": grid.n_cells,
        "grid_shape": list(grid.shape),
        "inducing": inducing,
        "dtype": dtype,
        "particles": particles,
    }
    if statistics_time:
        gc.collect()
        start = time.perf_counter()
        sightlines = Sightlines.from_positions(grid, catalog.l, catalog.b, catalog.distance)
        used = sightlines.star_index
        GaussianStatistics.from_stars(sightlines, catalog.extinction[used], catalog.extinction_err[used])
        row["statistics_s"] = time.perf_counter() - start
        del sightlines
    with memory_probe() as memory, svi_step_timer() as times:
        start = time.perf_counter()
        result = dustgp.fit(
            catalog,
            grid,
            inducing_points=inducing,
            dtype=dtype,
            particles=particles,
            max_iterations=warmup + iterations,
            stop="none",
            progress=False,
            seed=seed,
        )
        wall = time.perf_counter() - start
    row["setup_s"] = wall - result.seconds
    if times:
        row.update(summarise_steps(times, warmup), timing="SVI.step median")
    else:
        row.update(
            per_iteration_s=result.seconds / max(result.iterations, 1),
            per_iteration_min_s=None,
            iterations_timed=result.iterations,
            timing="fit.seconds / fit.iterations (SVI.step not called)",
        )
    row.update(memory)
    return row, result


def measure_prediction(result: Any, grid: Grid, *, samples: int) -> dict[str, Any]:
    with memory_probe() as memory:
        start = time.perf_counter()
        result.predict(grid, samples=samples, progress=False)
        seconds = time.perf_counter() - start
    return {
        "method": "dustgp predict",
        "cells": grid.n_cells,
        "grid_shape": list(grid.shape),
        "inducing": result.config.inducing_points,
        "dtype": result.config.dtype,
        "samples": samples,
        "seconds": seconds,
        "per_million_cells_s": seconds / grid.n_cells * 1e6,
        **memory,
    }


# ------------------------------------------------------------------------------------------------------------
# The baseline: GPyTorch's ApproximateGP with its default Pyro integration


class BaselineGP(gpytorch.models.ApproximateGP):
    """SVGP over phi = log10(density) with GPyTorch's own Pyro model and guide (``_PyroMixin``).

    ``pyro_guide`` samples ``u ~ q(u)`` and returns q(f)'s per-cell marginals ``Normal(mean, stddev)``;
    ``pyro_model`` samples ``u ~ p(u)`` and returns p(f)'s marginals. Both f sites are masked (they carry no
    log-density); the KL term comes from the u sites, estimated by Monte Carlo under ``Trace_ELBO``.
    """

    def __init__(self, inducing_points: torch.Tensor, *, mean: float, scale: float, length_scale: float) -> None:
        distribution = CholeskyVariationalDistribution(inducing_points.shape[0])
        strategy = VariationalStrategy(self, inducing_points, distribution, learn_inducing_locations=True)
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=3))
        self.mean_module.constant.data.fill_(mean)
        self.covar_module.outputscale = scale
        self.covar_module.base_kernel.lengthscale = length_scale
        self.to(inducing_points.dtype)

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    def model(self, x: torch.Tensor, w: torch.Tensor, extinction: torch.Tensor, sigma: torch.Tensor) -> None:
        pyro.module("gp", self)
        function_dist = self.pyro_model(x, name_prefix="gp")
        with pyro.plate("cells", x.shape[0], dim=-1):
            f = pyro.sample("gp.f", function_dist)  # (particles, cells)
        rho = torch.pow(10.0, f).reshape(-1, x.shape[0])
        a_model = torch.sparse.mm(w, rho.T).T.reshape(*f.shape[:-1], -1)  # (particles, stars)
        with pyro.plate("stars", extinction.shape[0], dim=-1):
            pyro.sample("extinction", pdist.Normal(a_model, sigma), obs=extinction)

    def guide(self, x: torch.Tensor, w: torch.Tensor, extinction: torch.Tensor, sigma: torch.Tensor) -> None:
        # pyro_guide reads q(u) from the strategy's memo before calling the model (which clears it in training
        # mode); without this the memo still holds last step's q(u), whose graph backward has already freed
        self.variational_strategy._clear_cache()
        function_dist = self.pyro_guide(x, name_prefix="gp")
        with pyro.plate("cells", x.shape[0], dim=-1):
            pyro.sample("gp.f", function_dist)


def measure_baseline(
    catalog: Catalog,
    grid: Grid,
    *,
    inducing: int,
    dtype: str,
    iterations: int,
    warmup: int,
    particles: int,
    seed: int,
    length_scale: float = 20.0,
) -> dict[str, Any]:
    torch_dtype = torch.float32 if dtype == "float32" else torch.float64
    pyro.clear_param_store()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    with memory_probe() as memory:
        start = time.perf_counter()
        sightlines = Sightlines.from_positions(grid, catalog.l, catalog.b, catalog.distance)
        used = sightlines.star_index
        w = sightlines.matrix(dtype=torch_dtype)
        extinction = torch.as_tensor(catalog.extinction[used], dtype=torch_dtype)
        sigma = torch.as_tensor(catalog.extinction_err[used], dtype=torch_dtype)
        # coordinates in units of the initial scale length, as dustgp does, so that every learnable is O(1)
        x = torch.as_tensor(grid.cell_centers_xyz() / length_scale, dtype=torch_dtype)
        stars_xyz = lbd_to_xyz(catalog.l[used], catalog.b[used], catalog.distance[used])
        z = torch.as_tensor(stars_xyz[rng.choice(len(used), inducing, replace=False)] / length_scale, dtype=torch_dtype)
        ratio = catalog.extinction[used] / catalog.distance[used]
        gp = BaselineGP(z, mean=float(np.log10(np.median(ratio[ratio > 0]))), scale=0.5, length_scale=1.0)
        elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
        svi = SVI(gp.model, gp.guide, pyro.optim.Adam({"lr": 0.01}), loss=elbo)
        setup = time.perf_counter() - start
        times = []
        for _ in range(warmup + iterations):
            step_start = time.perf_counter()
            loss = svi.step(x, w, extinction, sigma)
            times.append(time.perf_counter() - step_start)
    return {
        "method": "baseline gpytorch+pyro",
        "stars": len(used),
        "cells": grid.n_cells,
        "grid_shape": list(grid.shape),
        "inducing": inducing,
        "dtype": dtype,
        "particles": particles,
        "setup_s": setup,
        "final_loss": float(loss),
        **summarise_steps(times, warmup),
        "timing": "SVI.step median",
        **memory,
    }


# ------------------------------------------------------------------------------------------------------------
# Running and reporting


def slope(rows: list[dict[str, Any]], x: str, y: str) -> float | None:
    """Least-squares slope of log(y) against log(x) over rows that have both."""
    pairs = [(r[x], r[y]) for r in rows if r.get(x) and r.get(y)]
    if len({p[0] for p in pairs}) < 2:
        return None
    lx, ly = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return float(np.polyfit(lx, ly, 1)[0])


def print_row(axis: str, row: dict[str, Any]) -> None:
    def num(key: str, fmt: str) -> str:
        value = row.get(key)
        return format(value, fmt) if isinstance(value, int | float) else "-"

    if "per_million_cells_s" in row:
        timing = f"{'':>8s} {num('per_million_cells_s', '10.3f')} s/1e6 cells"
    else:
        timing = f"{num('setup_s', '8.2f')} {num('per_iteration_s', '10.4f')} {num('per_iteration_min_s', '10.4f')}"
    print(
        f"{axis:10s} {row.get('method', ''):24s} {num('stars', '9d')} {num('cells', '8d')} {num('inducing', '6d')} "
        f"{row.get('dtype', ''):8s} {timing} {num('peak_mb', '9.0f')} {num('delta_mb', '9.0f')}",
        flush=True,
    )


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    return {
        "dustgp": dustgp.__version__,
        "torch": torch.__version__,
        "gpytorch": gpytorch.__version__,
        "pyro": pyro.__version__,
        "numpy": np.__version__,
    }


def run(args: argparse.Namespace, sizes: dict[str, Any]) -> dict[str, Any]:
    reference = sizes["reference"]
    ref_grid = region_grid(reference["shape"], reference["ghost_cells"])
    common = {"iterations": args.iterations, "warmup": args.warmup, "particles": args.particles, "seed": args.seed}
    uses_stars = "stars" in args.axes or "combined" in args.axes
    n_max = max([reference["stars"], *(sizes["stars"] if uses_stars else [])])
    stars = Stars(n_max, tuple(sizes["truth_shape"]), args.seed)
    print(f"simulated {n_max} stars in {stars.seconds:.1f} s")
    header = (
        f"{'axis':10s} {'method':24s} {'stars':>9s} {'cells':>8s} {'M':>6s} {'dtype':8s} {'setup s':>8s} "
        f"{'s/iter med':>10s} {'s/iter min':>10s} {'peak MB':>9s} {'+MB':>9s}"
    )
    print(header)
    results: dict[str, list[dict[str, Any]]] = {axis: [] for axis in AXES}

    def record(axis: str, row: dict[str, Any]) -> None:
        row["axis"] = axis
        results[axis].append(row)
        print_row(axis, row)

    default_dtype = sizes["dtypes"][0]
    ref_catalog = stars.catalog(reference["stars"])
    # one-off costs (lazy imports and initialisation, allocator growth, Pyro's first trace) stay out of row one
    warm = {**common, "iterations": 2, "warmup": 0}
    measure_dustgp(stars.catalog(2000), region_grid((4, 4, 4), 1), inducing=16, dtype=default_dtype, **warm)
    if "baseline" in args.axes:
        # side by side at the reference size, dustgp first then the baseline, on the same stars and grid
        options = {"inducing": reference["inducing"], "dtype": default_dtype, **common}
        record("baseline", measure_dustgp(ref_catalog, ref_grid, **options)[0])
        record("baseline", measure_baseline(ref_catalog, ref_grid, **options))
    if "stars" in args.axes:
        for n in sizes["stars"]:
            row, _ = measure_dustgp(
                stars.catalog(n),
                ref_grid,
                inducing=reference["inducing"],
                dtype=default_dtype,
                statistics_time=True,
                **common,
            )
            record("stars", row)
    if "cells" in args.axes:
        for target in sizes["cells"]:
            grid = region_grid(shape_for_cells(target, reference), reference["ghost_cells"])
            row, _ = measure_dustgp(ref_catalog, grid, inducing=reference["inducing"], dtype=default_dtype, **common)
            record("cells", row)
    if "inducing" in args.axes:
        for m in sizes["inducing"]:
            row, _ = measure_dustgp(ref_catalog, ref_grid, inducing=m, dtype=default_dtype, **common)
            record("inducing", row)
    if "combined" in args.axes:
        # the most stars and the most training cells of the axes above, together in one row
        grid = region_grid(shape_for_cells(max(sizes["cells"]), reference), reference["ghost_cells"])
        catalog = stars.catalog(max(sizes["stars"]))
        row, _ = measure_dustgp(
            catalog, grid, inducing=reference["inducing"], dtype=default_dtype, statistics_time=True, **common
        )
        record("combined", row)
    fits = {}
    if "dtype" in args.axes or "prediction" in args.axes:
        for dtype in sizes["dtypes"]:
            row, fits[dtype] = measure_dustgp(
                ref_catalog, ref_grid, inducing=reference["inducing"], dtype=dtype, **common
            )
            record("dtype", row)
    if "prediction" in args.axes:
        prediction_grid = region_grid(tuple(sizes["prediction_shape"]), reference["ghost_cells"])
        for result in fits.values():
            record("prediction", measure_prediction(result, prediction_grid, samples=sizes["prediction_samples"]))

    exponents = {
        "stars_vs_setup_s": slope(results["stars"], "stars", "setup_s"),
        "stars_vs_statistics_s": slope(results["stars"], "stars", "statistics_s"),
        "stars_vs_per_iteration_s": slope(results["stars"], "stars", "per_iteration_s"),
        "cells_vs_per_iteration_s": slope(results["cells"], "cells", "per_iteration_s"),
        "inducing_vs_per_iteration_s": slope(results["inducing"], "inducing", "per_iteration_s"),
        "cells_vs_peak_delta_mb": slope(results["cells"], "cells", "delta_mb"),
        "inducing_vs_peak_delta_mb": slope(results["inducing"], "inducing", "delta_mb"),
    }
    speedups = {}
    pair = {r["method"]: r for r in results["baseline"]}
    if len(pair) == 2:
        ours, theirs = pair["dustgp"], pair["baseline gpytorch+pyro"]
        speedups["reference"] = {
            "size": {k: ours[k] for k in ("stars", "cells", "grid_shape", "inducing", "dtype", "particles")},
            "baseline_per_iteration_s": theirs["per_iteration_s"],
            "dustgp_per_iteration_s": ours["per_iteration_s"],
            "speedup": theirs["per_iteration_s"] / ours["per_iteration_s"],
            "memory_ratio": theirs["delta_mb"] / ours["delta_mb"] if ours.get("delta_mb") else None,
        }
    by_dtype = {r["dtype"]: r["per_iteration_s"] for r in results["dtype"]}
    if {"float32", "float64"} <= set(by_dtype):
        speedups["float32_over_float64"] = by_dtype["float64"] / by_dtype["float32"]
    return {"results": results, "exponents": exponents, "speedups": speedups, "simulate_s": stars.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of the whole script")
    parser.add_argument("--out", type=Path, default=None, help=f"default {RESULTS} ({QUICK_RESULTS.name} with --quick)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's choice; 1 with --quick, see the README on shared machines)",
    )
    parser.add_argument("--iterations", type=int, default=None, help="timed iterations per row")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations first")
    parser.add_argument("--particles", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stars", type=int, nargs="+", help="star counts (stars axis)")
    parser.add_argument("--cells", type=int, nargs="+", help="target training-cell counts (cells axis)")
    parser.add_argument("--inducing", type=int, nargs="+", help="inducing-point counts (inducing axis)")
    parser.add_argument("--skip", nargs="+", choices=AXES, default=[], help="axes to leave out")
    args = parser.parse_args()

    if args.out is None:
        args.out = QUICK_RESULTS if args.quick else RESULTS
    sizes = dict(QUICK if args.quick else FULL)
    for key in ("stars", "cells", "inducing", "iterations", "warmup"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    args.iterations, args.warmup = sizes["iterations"], sizes["warmup"]
    args.axes = [a for a in AXES if a not in args.skip]
    if args.threads is None and args.quick:
        args.threads = 1  # a smoke run on a shared machine: oversubscribed OpenMP threads can cost 100x
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    print(
        f"dustgp {dustgp.__version__}, torch {torch.__version__}, gpytorch {gpytorch.__version__}, "
        f"pyro {pyro.__version__}; {torch.get_num_threads()} threads; load average {load_before}"
    )
    start = time.perf_counter()
    report = run(args, sizes)
    elapsed = time.perf_counter() - start

    print("\nscaling exponents (log-log slope):")
    for name, value in report["exponents"].items():
        print(f"  {name:30s} {'-' if value is None else f'{value:6.2f}'}")
    for name, value in report["speedups"].items():
        if isinstance(value, dict):
            print(
                f"speed-up over the GPyTorch + Pyro baseline at {value['size']}: {value['speedup']:.1f}x "
                f"({value['baseline_per_iteration_s']:.3f} s vs {value['dustgp_per_iteration_s']:.3f} s per iteration)"
            )
        else:
            print(f"{name}: {value:.2f}")

    record = {
        "benchmark": "scaling",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sizes": sizes,
        "machine": machine(),
        "versions": versions(),
        "threads": torch.get_num_threads(),
        "default_dtype": sizes["dtypes"][0],
        # other processes on the machine distort timings; the load average says how much to trust them
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "seconds": elapsed,
        **report,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=f".{args.out.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)  # mkstemp makes the file private; results are for everyone to read
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(record, indent=2, default=_json_default) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({elapsed:.0f} s)")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


if __name__ == "__main__":
    main()
