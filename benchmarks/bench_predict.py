"""Prediction of the Section 3 map, this checkout against a baseline revision, side by side on one fit.

Fits the paper's Section 3 experiment once (``method="newton"``, the paper's Gaussian likelihood; or loads
``--fit``), saves the fit, then predicts the 100 × 100 × 105 + 2 ghost-cell map with 200 samples (as
``bench_fit.py`` does) ``--repeats`` times with each source tree, alternating: this checkout's ``src/`` and the
``src/`` of ``--baseline`` (a git revision, checked out into a temporary worktree). Each prediction runs in a fresh
subprocess with the same threads, so the two see the same fit, machine and load. Reports the best and median
seconds of each, their ratio, and the map's accuracy against the truth (which must agree within the Monte Carlo
noise of 200 samples).

    .venv/bin/python benchmarks/bench_predict.py --baseline ade638e
    .venv/bin/python benchmarks/bench_predict.py --baseline ade638e --fit /tmp/s3.fit --repeats 3

Writes ``benchmarks/results/predict.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import dustgp
from baseline import CURRENT_SRC, measure_in, revision_src, write_record
from bench_fit import FULL, section3

HERE = Path(__file__).resolve().parent

#: Run in a subprocess with ``src`` of one tree first on sys.path: load the fit, predict, score, print JSON.
CHILD = """
import json, time
from bench_fit import FULL, section3
from dustgp.fitting.record import load_fit
from dustgp.validation import compare_to_truth
sky, train, grid = section3(FULL)
fit = load_fit({fit!r})
started = time.perf_counter()
dmap = fit.predict(grid, samples=FULL["samples"], cell_variance=None, progress=False)
seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, **compare_to_truth(dmap, sky).to_dict()}}))
"""


def make_fit(path: Path) -> None:
    """Fit Section 3 once (newton, the paper's likelihood, seed 1) and save the fit to ``path``."""
    sky, train, _ = section3(FULL)
    fit = dustgp.fit(
        sky.catalog,
        train,
        progress=False,
        method="newton",
        inducing_points=FULL["inducing"],
        length_scale=FULL["length_scale"],
        likelihood=FULL["likelihood"],
        error_floor=FULL["error_floor"],
        seed=1,
    )
    fit.save(path)


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = [r["seconds"] for r in runs]
    return {"best_seconds": min(seconds), "median_seconds": statistics.median(seconds), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare with (e.g. a commit hash)")
    parser.add_argument("--fit", type=Path, help="a saved Section 3 fit (default: fit one, seed 1)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "predict.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        fit = args.fit
        if fit is None:
            fit = Path(tmp) / "section3.fit"
            make_fit(fit)
        code = CHILD.format(fit=str(fit))
        with revision_src(args.baseline) as baseline_src:
            load_before = os.getloadavg()
            runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "current": []}
            for _ in range(args.repeats):
                runs["baseline"].append(measure_in(baseline_src, code, args.threads))
                runs["current"].append(measure_in(CURRENT_SRC, code, args.threads))
            load_after = os.getloadavg()

    result = {name: summary(r) for name, r in runs.items()}
    ratio = result["baseline"]["best_seconds"] / result["current"]["best_seconds"]
    print(f"{'tree':9} {'best s':>7} {'median s':>9} {'med err':>8} {'p90 err':>8} {'cover':>6} {'A cover':>8}")
    for name, r in result.items():
        last = r["runs"][-1]
        print(
            f"{name:9} {r['best_seconds']:7.1f} {r['median_seconds']:9.1f} {last['median_relative_error']:8.2%} "
            f"{last['p90_relative_error']:8.2%} {last['coverage_16_84']:6.1%} {last['extinction_coverage_16_84']:8.1%}"
        )
    print(f"speed-up (best against best): {ratio:.2f}x")
    write_record(
        "predict",
        args,
        (load_before, load_after),
        what="Section 3 prediction, 100 x 100 x 105 + 2 ghost cells, 200 samples, cell_variance=None",
        threads=args.threads,
        speedup_best=ratio,
        **result,
    )


if __name__ == "__main__":
    main()
