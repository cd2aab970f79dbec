"""Time to a converged map on the paper's Section 3 experiment, and its accuracy, method by method.

Runs the full-size experiment (120,000 stars, 20×20×35 training grid + 2 ghost cells, 1000 inducing points,
prediction on 100×100×105 + 2 ghost cells with 200 samples) once per fitting method, stop rule and fit seed, and
puts them side by side: ``method="newton"`` (exact ELBO, natural-gradient and L-BFGS steps) with its default stop
rule, and ``method="svi"`` (the paper's Pyro SVI) with each of ``--rules`` ("map", the default; "elbo", the paper's
rule). Every map is predicted with ``cell_variance=None`` ("as the model was trained") and compared with the
simulated truth. Prints a table and writes JSON (machine, versions, threads, load average, every figure).

``--baseline`` also times ``--baseline-iterations`` SVI steps of the plain GPyTorch + Pyro formulation (GPyTorch's
default Pyro model and guide; ``bench_scaling.measure_baseline``) on the same stars, grid and inducing-point count,
and reports, for each SVI row, an EXTRAPOLATED baseline total: its median seconds per iteration times the iterations
that SVI needed to reach its stop rule. The baseline is not run to convergence.

    .venv/bin/python benchmarks/bench_fit.py                          # full size, both methods, map + elbo rules
    .venv/bin/python benchmarks/bench_fit.py --seeds 1 2 3 --rules map --baseline
    .venv/bin/python benchmarks/bench_fit.py --methods newton --seeds 1 2 3 --direct   # with and without coarse start
    .venv/bin/python benchmarks/bench_fit.py --quick --methods newton svi --rules map   # smoke run, minutes
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import dustgp
from bench_scaling import machine as host_machine
from bench_scaling import measure_baseline, region_grid, versions
from dustgp.prediction import predict
from dustgp.validation import compare_to_truth

HERE = Path(__file__).resolve().parent
METHODS = ("newton", "svi")

#: The paper's Section 3 experiment (docs: Method §9). ``max_iterations`` None: each method's default bound.
FULL: dict[str, Any] = {
    "stars": 120_000,
    "train_shape": (20, 20, 35),
    "ghost_cells": 2,
    "inducing": 1000,
    "length_scale": 20.0,
    "predict_shape": (100, 100, 105),
    "samples": 200,
    "max_iterations": {"newton": None, "svi": None},
    # the paper's noise model: the simulated noise is Gaussian (sigma = 10% of A), no outliers, no floor
    "likelihood": "gaussian",
    "error_floor": 0.0,
}
#: A smoke run: fewer stars, half the inducing points, an 8× coarser prediction grid, capped iterations.
QUICK: dict[str, Any] = {
    **FULL,
    "stars": 20_000,
    "inducing": 500,
    "predict_shape": (50, 50, 52),
    "max_iterations": {"newton": 15, "svi": 200},
}


class CoarseStage(logging.Handler):
    """Steps and seconds of a newton fit's coarse stage, read from its log record (None when it had none)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.steps: int | None = None
        self.seconds: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("coarse start"):
            self.steps, _, self.seconds = record.args[:3]


def predict_accepts_none() -> bool:
    """Whether ``predict(cell_variance=None)`` means "as the model was trained" (a ``bool | None`` option)."""
    annotation = inspect.signature(predict).parameters["cell_variance"].annotation
    return "None" in str(annotation)


def cell_variance_option(method: str) -> bool | None:
    """What to pass as ``cell_variance``: None ("as trained") for every method once predict takes it."""
    if predict_accepts_none():
        return None
    # predict's cell_variance is still a plain bool here: True for svi as `dustgp demo` does; None for newton, which
    # such a predict reads as False (no cell noise). Drop this branch once predict takes None.
    return True if method == "svi" else None


def gpu_info(device: str) -> dict[str, Any] | None:
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    index = torch.device(device).index or 0
    props = torch.cuda.get_device_properties(index)
    return {
        "name": props.name,
        "total_memory_gb": props.total_memory / 2**30,
        "capability": f"{props.major}.{props.minor}",
        "cuda": torch.version.cuda,
        "device_count": torch.cuda.device_count(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }


def machine(device: str = "cpu") -> dict[str, Any]:
    """The host (bench_scaling's record), torch's threads and, on CUDA, the GPU."""
    return {**host_machine(), "torch_threads": torch.get_num_threads(), "device": device, "gpu": gpu_info(device)}


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def section3(sizes: dict[str, Any]) -> tuple[Any, dustgp.Grid, dustgp.Grid]:
    """The simulated sky (catalogue seed 0), the training grid and the prediction grid."""
    sky = dustgp.paper_experiment(n_stars=sizes["stars"], seed=0)
    train = region_grid(tuple(sizes["train_shape"]), sizes["ghost_cells"])
    predict_grid = region_grid(tuple(sizes["predict_shape"]), sizes["ghost_cells"])
    return sky, train, predict_grid


def fit_and_score(
    sky: Any,
    train: dustgp.Grid,
    predict_grid: dustgp.Grid,
    sizes: dict[str, Any],
    *,
    method: str,
    rule: str,
    seed: int,
    device: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit with one method, stop rule and seed, predict the map and compare it with the truth: one row."""
    options: dict[str, Any] = {
        "method": method,
        "inducing_points": sizes["inducing"],
        "length_scale": sizes["length_scale"],
        "seed": seed,
        "stop": rule,
        "device": device,
        "likelihood": sizes["likelihood"],
        "error_floor": sizes["error_floor"],
    }
    if sizes["max_iterations"][method] is not None:
        options["max_iterations"] = sizes["max_iterations"][method]
    options |= extra or {}
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    coarse, log = CoarseStage(), logging.getLogger("dustgp.fitting.loop")
    level = log.level
    log.addHandler(coarse)
    log.setLevel(logging.INFO)
    started = time.perf_counter()
    try:
        fit = dustgp.fit(sky.catalog, train, progress=False, **options)
    finally:
        log.removeHandler(coarse)
        log.setLevel(level)
    synchronize(device)
    wall = time.perf_counter() - started
    peak_fit = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    cell_variance = cell_variance_option(method)
    started = time.perf_counter()
    dmap = fit.predict(predict_grid, samples=sizes["samples"], cell_variance=cell_variance, progress=False)
    synchronize(device)
    predict_seconds = time.perf_counter() - started
    accuracy = compare_to_truth(dmap, sky)
    return {
        "method": method,
        "stop_rule": fit.config.stop,
        "seed": seed,
        "device": device,
        "dtype": "float64" if method == "newton" else fit.config.dtype,
        "stopped_by": fit.stopped_by,
        "converged": fit.converged,
        "iterations": fit.iterations,
        "coarse_start": bool(getattr(fit.config, "coarse_start", False)),
        "foreground": getattr(fit, "foreground", None),
        "trained_ghost_cells": fit.grid.ghost_cells,
        "coarse_steps": coarse.steps,
        "coarse_seconds": coarse.seconds,
        "max_iterations": fit.config.max_iterations,
        "train_seconds": fit.seconds,
        "setup_seconds": wall - fit.seconds,
        "seconds_per_step": fit.seconds / max(fit.iterations, 1),
        "final_negative_elbo": float(fit.losses[-1]) if fit.losses.size else None,
        "predict_seconds": predict_seconds,
        "predict_cells": predict_grid.n_cells,
        "cell_variance_passed": cell_variance,
        "cell_variance_used": dmap.meta.get("cell_variance"),
        "peak_gpu_mb_fit": peak_fit,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "hyperparameters": fit.hyperparameters(),
        **accuracy.to_dict(),
    }


def failed_row(method: str, rule: str, seed: int, error: BaseException) -> dict[str, Any]:
    return {"method": method, "stop_rule": rule, "seed": seed, "error": f"{type(error).__name__}: {error}"}


def print_table(rows: list[dict[str, Any]]) -> None:
    """Accuracy and timing per row, then the hyperparameters each fit ended with."""
    print(
        f"{'method':7} {'rule':5} {'seed':>4} {'stopped_by':15} {'conv':>5} {'steps':>6} {'coarse':>6} {'train s':>8} "
        f"{'s/step':>7} {'pred s':>7} {'med err':>8} {'p90 err':>8} {'cover':>6} {'under':>6}"
    )
    for r in rows:
        head = f"{r['method']:7} {r['stop_rule']:5} {r['seed']:4d}"
        if "error" in r:
            print(f"{head} FAILED: {r['error']}")
            continue
        print(
            f"{head} {r['stopped_by']:15} {'yes' if r['converged'] else 'NO':>5} {r['iterations']:6d} "
            f"{r.get('coarse_steps') or 0:6d} "
            f"{r['train_seconds']:8.1f} {r['seconds_per_step']:7.3f} {r['predict_seconds']:7.1f} "
            f"{r['median_relative_error']:8.2%} {r['p90_relative_error']:8.2%} {r['coverage_16_84']:6.1%} "
            f"{r['underestimated_fraction']:6.2%}"
        )
    print(
        f"\n{'method':7} {'rule':5} {'seed':>4} {'c (log10 mag/pc)':>16} {'alpha (dex²)':>12} "
        f"{'gamma_x,y,z (pc)':>22}  cell_variance"
    )
    for r in rows:
        if "error" in r:
            continue
        h = r["hyperparameters"]
        gammas = ", ".join(f"{g:.1f}" for g in h["length_scale_pc"])
        print(
            f"{r['method']:7} {r['stop_rule']:5} {r['seed']:4d} {h['mean_log10_density']:16.3f} "
            f"{h['scale_dex2']:12.3f} {gammas:>22}  {r['cell_variance_used']}"
        )


def baseline_report(
    sky: Any, train: dustgp.Grid, sizes: dict[str, Any], rows: list[dict[str, Any]], *, iterations: int, seed: int
) -> dict[str, Any]:
    """Time the GPyTorch default-Pyro-guide baseline at this size; extrapolate its total to svi's iteration counts."""
    timing = measure_baseline(
        sky.catalog,
        train,
        inducing=sizes["inducing"],
        dtype="float32",
        iterations=iterations,
        warmup=1,
        particles=32,
        seed=seed,
        length_scale=sizes["length_scale"],
    )
    per_iteration = timing["per_iteration_s"]
    newton_seconds = {r["seed"]: r["train_seconds"] for r in rows if r["method"] == "newton" and "error" not in r}
    extrapolated = []
    for r in rows:
        if r["method"] != "svi" or "error" in r:
            continue
        total = per_iteration * r["iterations"]
        extrapolated.append(
            {
                "svi_stop_rule": r["stop_rule"],
                "seed": r["seed"],
                "svi_stopped_by": r["stopped_by"],
                "svi_converged": r["converged"],
                "svi_iterations": r["iterations"],
                "baseline_total_seconds_extrapolated": total,
                "svi_train_seconds": r["train_seconds"],
                "baseline_over_svi": total / r["train_seconds"],
                "newton_train_seconds": newton_seconds.get(r["seed"]),
                "baseline_over_newton": total / newton_seconds[r["seed"]] if r["seed"] in newton_seconds else None,
            }
        )
    return {
        "what": "GPyTorch ApproximateGP + its default pyro_model/pyro_guide, Trace_ELBO, 32 particles (bench_scaling)",
        "device": "cpu",
        "note": "baseline totals are EXTRAPOLATED: median s/iteration x the iterations svi needed to its stop rule",
        "timing": {k: v for k, v in timing.items() if k != "step_times_s"},
        "step_times_s": timing["step_times_s"],
        "extrapolated": extrapolated,
    }


def print_baseline(report: dict[str, Any]) -> None:
    t = report["timing"]
    print(
        f"\nGPyTorch default-Pyro-guide baseline at the same size (CPU, {t['stars']} stars, {t['cells']} cells, "
        f"M = {t['inducing']}, {t['dtype']}): {t['per_iteration_s']:.3f} s/iteration "
        f"(median of {t['iterations_timed']} timed after 1 untimed)"
    )
    print("EXTRAPOLATED baseline total = baseline s/iteration × the iterations svi needed to its stop rule:")
    for e in report["extrapolated"]:
        capped = "" if e["svi_converged"] else f" [svi stopped by {e['svi_stopped_by']}, not its rule]"
        versus = f"{e['baseline_over_svi']:.1f}× svi's {e['svi_train_seconds']:.1f} s"
        if e["baseline_over_newton"] is not None:
            versus += f", {e['baseline_over_newton']:.1f}× newton's {e['newton_train_seconds']:.1f} s"
        print(
            f"  svi {e['svi_stop_rule']:5} seed {e['seed']}: {e['svi_iterations']} it × {t['per_iteration_s']:.3f} s "
            f"= {e['baseline_total_seconds_extrapolated']:.1f} s (extrapolated; {versus}){capped}"
        )


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` atomically, readable by everyone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="20,000 stars, M = 500, coarser prediction, svi ≤ 200 it, newton ≤ 15 steps",
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="fitting methods")
    parser.add_argument(
        "--rules", nargs="+", choices=("map", "elbo"), default=["map", "elbo"], help="svi stop rules (newton: default)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[1], help="fit seeds (the catalogue's is 0)")
    parser.add_argument("--baseline", action="store_true", help="time the GPyTorch + Pyro baseline (extrapolated)")
    parser.add_argument(
        "--direct", action="store_true", help="newton: after each fit, fit again without the coarse start"
    )
    parser.add_argument("--baseline-iterations", type=int, default=20, help="timed baseline iterations")
    parser.add_argument("--device", default="cpu", help="torch device (the baseline always runs on the CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default torch's; 1 with --quick)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default benchmarks/results/...)")
    args = parser.parse_args()
    out = args.out or HERE / "results" / ("section3-quick.json" if args.quick else "section3.json")
    sizes = QUICK if args.quick else FULL
    if args.threads is None and args.quick:
        args.threads = 1  # see benchmarks/README.md: oversubscribed OpenMP threads on a shared machine
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    print(
        f"dustgp {dustgp.__version__}, torch {torch.__version__}; {torch.get_num_threads()} threads; "
        f"device {args.device}; load average {load_before}"
    )
    started = time.perf_counter()
    sky, train, predict_grid = section3(sizes)
    print(
        f"{len(sky.catalog)} stars, {train.n_cells} training cells, M = {sizes['inducing']}, "
        f"{predict_grid.n_cells} prediction cells, {sizes['samples']} samples; predict(cell_variance="
        f"{'None' if predict_accepts_none() else 'True for svi, None for newton: predict takes no None yet'})"
    )
    rows = []
    for method in args.methods:
        rules = args.rules if method == "svi" else ["map"]  # newton: its default stop rule only
        for rule in rules:
            variants = [{}, {"coarse_start": False}] if args.direct and method == "newton" else [{}]
            for seed in args.seeds:
                for extra in variants:
                    rows.append(
                        fit_and_score(
                            sky,
                            train,
                            predict_grid,
                            sizes,
                            method=method,
                            rule=rule,
                            seed=seed,
                            device=args.device,
                            extra=extra,
                        )
                    )
                    r = rows[-1]
                    coarse = f" (+ {r['coarse_steps']} on the coarse grid)" if r.get("coarse_steps") else ""
                    direct = " [direct]" if extra else ""
                    print(
                        f"  {method} {rule} seed {seed}{direct}: {r['stopped_by']} after {r['iterations']}{coarse} in "
                        f"{r['train_seconds']:.1f} s, predicted in {r['predict_seconds']:.1f} s",
                        flush=True,
                    )
    baseline = None
    if args.baseline:
        baseline = baseline_report(sky, train, sizes, rows, iterations=args.baseline_iterations, seed=args.seeds[0])
    print()
    print_table(rows)
    if baseline is not None:
        print_baseline(baseline)
    record = {
        "benchmark": "section3",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sizes": sizes,
        "machine": machine(args.device),
        "versions": versions(),
        "threads": torch.get_num_threads(),
        "predict_accepts_cell_variance_none": predict_accepts_none(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "seconds": time.perf_counter() - started,
        "rows": rows,
        "baseline": baseline,
    }
    write_json(out, record)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
