"""Both fitting methods on one CUDA GPU: the Section 3 experiment at full size, and a 10⁷-star, 10⁶-cell scaling row.

One command, meant to finish in a few minutes on an H100/H200::

    .venv/bin/python benchmarks/bench_gpu.py                       # device cuda; results/gpu.json
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --quick  # every size / 100: a CPU smoke run

Without a CUDA device (and ``--device cuda``, the default) it prints "no CUDA device; skipped" and exits 0.

What is measured
----------------
* **Section 3** (as ``bench_fit.py``, whose functions it uses): 120,000 stars, 20×20×35 + 2 ghost cells,
  M = 1000, ``method="newton"`` (default stop rule) and ``method="svi"`` (stop rule "map"), fit seed 1, on the
  device; prediction on 100×100×105 + 2 ghost cells with 200 samples and ``cell_variance=None``; accuracy
  against the simulated truth; peak GPU memory (``torch.cuda.max_memory_allocated``) of fit and predict.
* **Scaling**: 10⁷ simulated stars over the Section 3 region, a 100×100×100 training grid + 2 ghost cells
  (1.02·10⁶ cells), M = 1000; per method one ``dustgp.fit(..., stop="none", max_iterations=small)``: set-up
  seconds (locating the stars, sufficient statistics, model and, for newton, the first exact ELBO and its
  gradients: ``fit``'s wall time less ``Fit.seconds``), seconds per outer step / iteration (median over the steps
  after the first ``--untimed``; for newton those first steps are also the ones that move q alone, its
  ``warmup``), and the peak GPU memory of the row (the host's peak resident set too). The 10⁷ stars are
  simulated once on the CPU (numpy) and not timed as set-up.

Each row that fails (e.g. out of memory) is recorded with its error and the others still run; the exit status is
then 1. The JSON holds the machine (GPU name, memory, CUDA version), versions, threads and every row.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import os
import statistics
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from pyro.infer import SVI

import dustgp
from bench_fit import FULL as SECTION3_FULL
from bench_fit import failed_row, fit_and_score, machine, predict_accepts_none, print_table, section3, write_json
from bench_scaling import memory_probe, region_grid, versions
from dustgp.fitting.newton import NewtonOptimizer

HERE = Path(__file__).resolve().parent
METHODS = ("newton", "svi")

SCALING_FULL: dict[str, Any] = {"stars": 10_000_000, "shape": (100, 100, 100), "ghost_cells": 2, "inducing": 1000}
#: --quick: every size divided by 100 (stars, cells, inducing points, prediction cells); iteration caps as
#: bench_fit's --quick
SECTION3_QUICK: dict[str, Any] = {
    **SECTION3_FULL,
    "stars": 1_200,
    "train_shape": (4, 4, 7),
    "inducing": 10,
    "predict_shape": (21, 21, 22),
    "max_iterations": {"newton": 15, "svi": 200},
}
SCALING_QUICK: dict[str, Any] = {"stars": 100_000, "shape": (21, 21, 21), "ghost_cells": 2, "inducing": 10}


@contextlib.contextmanager
def step_timer(owner: type, name: str, device: str) -> Iterator[list[float]]:
    """Wall time of every call of ``owner.name`` inside the block (device synchronised before and after)."""
    times: list[float] = []
    original = getattr(owner, name)
    cuda = device.startswith("cuda")

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = original(self, *args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        return out

    setattr(owner, name, timed)
    try:
        yield times
    finally:
        setattr(owner, name, original)


def free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def scaling_row(
    catalog: dustgp.Catalog,
    grid: dustgp.Grid,
    *,
    method: str,
    inducing: int,
    iterations: int,
    untimed: int,
    device: str,
    seed: int,
) -> dict[str, Any]:
    """Set-up and a few steps of one method at the scaling size, ``stop="none"``."""
    cuda = device.startswith("cuda")
    free(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    owner, name = (NewtonOptimizer, "step") if method == "newton" else (SVI, "step")
    with memory_probe() as memory, step_timer(owner, name, device) as times:
        start = time.perf_counter()
        fit = dustgp.fit(
            catalog,
            grid,
            method=method,
            inducing_points=inducing,
            length_scale=20.0,
            max_iterations=untimed + iterations,
            stop="none",
            device=device,
            seed=seed,
            progress=False,
        )
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    timed = times[untimed:] or times
    row = {
        "method": method,
        "device": device,
        "dtype": "float64" if method == "newton" else fit.config.dtype,
        "stars": len(catalog),
        "stars_used": fit.stars.get("used"),
        "cells": grid.n_cells,
        "grid_shape": list(grid.shape),
        "inducing": inducing,
        "iterations": fit.iterations,
        "stopped_by": fit.stopped_by,
        "setup_s": wall - fit.seconds,
        "train_s": fit.seconds,
        "per_step_s": statistics.median(timed) if timed else None,
        "per_step_min_s": min(timed) if timed else None,
        "steps_timed": len(timed),
        "step_times_s": times,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "peak_host_mb": memory.get("peak_mb"),
        "host_delta_mb": memory.get("delta_mb"),
    }
    del fit
    free(device)
    return row


def warm_up(device: str, methods: list[str]) -> None:
    """A tiny fit and prediction per method, so that one-off costs (CUDA context, library handles, kernels loaded
    on first use, Pyro's first trace) stay out of the first timed row. Failures are left to the real rows."""
    sky = dustgp.paper_experiment(n_stars=2_000, seed=0)
    grid = region_grid((4, 4, 4), 1)
    for method in methods:
        with contextlib.suppress(Exception):
            fit = dustgp.fit(
                sky.catalog,
                grid,
                method=method,
                inducing_points=16,
                max_iterations=3,
                stop="none",
                device=device,
                progress=False,
            )
            fit.predict(grid, samples=4, progress=False)
    free(device)


def print_scaling(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'method':7} {'stars':>10} {'cells':>9} {'M':>5} {'dtype':8} {'setup s':>8} {'s/step med':>10} "
        f"{'min':>8} {'timed':>5} {'GPU MB':>9} {'host MB':>9}"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['method']:7} FAILED: {r['error']}")
            continue

        def num(key: str, fmt: str, row: dict[str, Any] = r) -> str:
            value = row.get(key)
            return format(value, fmt) if isinstance(value, int | float) else "-"

        print(
            f"{r['method']:7} {r['stars']:10d} {r['cells']:9d} {r['inducing']:5d} {r['dtype']:8} "
            f"{num('setup_s', '8.2f')} {num('per_step_s', '10.4f')} {num('per_step_min_s', '8.4f')} "
            f"{r['steps_timed']:5d} {num('peak_gpu_mb', '9.0f')} {num('peak_host_mb', '9.0f')}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--quick", action="store_true", help="every size / 100: a smoke run (e.g. --device cpu)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--skip", nargs="+", choices=("section3", "scaling"), default=[], help="parts to leave out")
    parser.add_argument("--newton-steps", type=int, default=3, help="timed newton outer steps in the scaling row")
    parser.add_argument("--svi-iterations", type=int, default=10, help="timed svi iterations in the scaling row")
    parser.add_argument(
        "--untimed", type=int, default=2, help="first steps not timed in the scaling row (newton: its q-only warmup)"
    )
    parser.add_argument("--seed", type=int, default=1, help="fit seed (catalogue seed 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default torch's; 1 with --quick)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default benchmarks/results/gpu.json)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device; skipped")
        return 0
    out = args.out or HERE / "results" / ("gpu-quick.json" if args.quick else "gpu.json")
    if args.threads is None and args.quick:
        args.threads = 1  # a smoke run on a shared machine (see benchmarks/README.md)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    info = machine(args.device)
    gpu = info["gpu"]
    load_before = os.getloadavg()
    on = f" ({gpu['name']}, {gpu['total_memory_gb']:.0f} GiB)" if gpu else ""
    print(
        f"dustgp {dustgp.__version__}, torch {torch.__version__}; device {args.device}{on}; "
        f"{torch.get_num_threads()} CPU threads; load average {load_before}",
        flush=True,
    )
    started = time.perf_counter()
    section3_sizes = SECTION3_QUICK if args.quick else SECTION3_FULL
    scaling_sizes = SCALING_QUICK if args.quick else SCALING_FULL
    section3_rows: list[dict[str, Any]] = []
    scaling_rows: list[dict[str, Any]] = []
    simulate_s = None

    warm_up(args.device, args.methods)
    if "section3" not in args.skip:
        sky, train, predict_grid = section3(section3_sizes)
        print(
            f"\nSection 3: {len(sky.catalog)} stars, {train.n_cells} training cells, M = {section3_sizes['inducing']}, "
            f"{predict_grid.n_cells} prediction cells",
            flush=True,
        )
        for method in args.methods:
            try:
                row = fit_and_score(
                    sky,
                    train,
                    predict_grid,
                    section3_sizes,
                    method=method,
                    rule="map",
                    seed=args.seed,
                    device=args.device,
                )
            except Exception as error:  # a failed row is recorded; the others still run
                traceback.print_exc()
                row = failed_row(method, "map", args.seed, error)
            section3_rows.append(row)
            free(args.device)
            if "error" not in row:
                print(
                    f"  {method}: {row['stopped_by']} after {row['iterations']} in {row['train_seconds']:.1f} s, "
                    f"predicted in {row['predict_seconds']:.1f} s",
                    flush=True,
                )
        del sky

    if "scaling" not in args.skip:
        start = time.perf_counter()
        catalog = dustgp.paper_experiment(n_stars=scaling_sizes["stars"], seed=0).catalog
        simulate_s = time.perf_counter() - start
        grid = region_grid(tuple(scaling_sizes["shape"]), scaling_sizes["ghost_cells"])
        print(
            f"\nScaling: simulated {len(catalog)} stars in {simulate_s:.1f} s (CPU); {grid.n_cells} training cells, "
            f"M = {scaling_sizes['inducing']}",
            flush=True,
        )
        for method in args.methods:
            iterations = args.newton_steps if method == "newton" else args.svi_iterations
            try:
                row = scaling_row(
                    catalog,
                    grid,
                    method=method,
                    inducing=scaling_sizes["inducing"],
                    iterations=iterations,
                    untimed=args.untimed,
                    device=args.device,
                    seed=args.seed,
                )
            except Exception as error:
                traceback.print_exc()
                row = {"method": method, "error": f"{type(error).__name__}: {error}"}
                if args.device.startswith("cuda"):
                    row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
                free(args.device)
            scaling_rows.append(row)
            if "error" not in row:
                print(f"  {method}: set-up {row['setup_s']:.1f} s, {row['per_step_s']:.3f} s/step", flush=True)

    elapsed = time.perf_counter() - started
    if section3_rows:
        print("\nSection 3 (full size)" if not args.quick else "\nSection 3 (--quick: sizes / 100)")
        print_table(section3_rows)
    if scaling_rows:
        print("\nScaling row" + (" (--quick: sizes / 100)" if args.quick else ""))
        print_scaling(scaling_rows)
    record = {
        "benchmark": "gpu",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sizes": {"section3": section3_sizes, "scaling": scaling_sizes},
        "machine": info,
        "versions": versions(),
        "threads": torch.get_num_threads(),
        "predict_accepts_cell_variance_none": predict_accepts_none(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "seconds": elapsed,
        "simulate_scaling_stars_s": simulate_s,
        "section3": section3_rows,
        "scaling": scaling_rows,
    }
    write_json(out, record)
    print(f"wrote {out} ({elapsed:.0f} s)")
    failed = [r["method"] for r in section3_rows + scaling_rows if "error" in r]
    if failed:
        print(f"{len(failed)} row(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
