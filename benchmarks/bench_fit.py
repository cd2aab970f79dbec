"""Time to a converged map on the paper's Section 3 experiment, and its accuracy, per stop rule.

Runs the full-size experiment (120,000 stars, 20×20×35 training grid + 2 ghost cells, 1000 inducing points,
prediction on 100×100×105 cells with ``cell_variance=True`` as ``dustgp demo``) with the default stop rule
("map") and the paper's ELBO rule ("elbo"), prints a table and writes JSON (machine, versions, threads, every
figure).

    .venv/bin/python benchmarks/bench_fit.py                 # full size, ~6 minutes on 2 cores
    .venv/bin/python benchmarks/bench_fit.py --quick         # 20,000 stars, capped iterations: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

import dustgp
from dustgp.validation import compare_to_truth

HERE = Path(__file__).resolve().parent


def machine() -> dict[str, object]:
    import gpytorch
    import pyro

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpytorch": gpytorch.__version__,
        "pyro": pyro.__version__,
        "dustgp": dustgp.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 stars and at most 200 iterations")
    parser.add_argument("--rules", nargs="+", default=["map", "elbo"], help="stop rules to run (map, elbo)")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default benchmarks/results/...)")
    args = parser.parse_args()
    out = args.out or HERE / "results" / ("section3-quick.json" if args.quick else "section3.json")

    sky = dustgp.paper_experiment(n_stars=20_000 if args.quick else 120_000, seed=0)
    train = dustgp.Grid(l=(50, 90, 20), b=(-10, 10, 20), d=(180, 500, 35), ghost_cells=2)
    predict_grid = dustgp.Grid(l=(50, 90, 100), b=(-10, 10, 100), d=(180, 500, 105), ghost_cells=2)
    rows = []
    for rule in args.rules:
        options = {"inducing_points": 1000, "length_scale": 20.0, "seed": 1, "stop": rule, "device": args.device}
        if args.quick:
            options["max_iterations"] = 200
        fit = dustgp.fit(sky.catalog, train, progress=False, **options)
        started = time.perf_counter()
        dmap = fit.predict(predict_grid, samples=200, cell_variance=True, progress=False)
        predict_seconds = time.perf_counter() - started
        accuracy = compare_to_truth(dmap, sky)
        rows.append(
            {
                "stop_rule": rule,
                "stopped_by": fit.stopped_by,
                "iterations": fit.iterations,
                "train_seconds": fit.seconds,
                "seconds_per_iteration": fit.seconds / fit.iterations,
                "predict_seconds": predict_seconds,
                **accuracy.to_dict(),
            }
        )

    header = f"{'rule':6} {'iters':>6} {'train s':>8} {'s/it':>7} {'pred s':>7} {'med err':>8} {'p90 err':>8} "
    header += f"{'cover':>6} {'under':>6}"
    print(header)
    for r in rows:
        print(
            f"{r['stop_rule']:6} {r['iterations']:6d} {r['train_seconds']:8.1f} {r['seconds_per_iteration']:7.3f} "
            f"{r['predict_seconds']:7.1f} {r['median_relative_error']:8.2%} {r['p90_relative_error']:8.2%} "
            f"{r['coverage_16_84']:6.1%} {r['underestimated_fraction']:6.2%}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "section3", "machine": machine(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
