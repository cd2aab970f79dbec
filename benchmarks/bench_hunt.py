"""Hunt & Reffert 2023 clusters within 1 kpc: held-out clusters against the map's posterior predictive.

Runs ``examples/hunt2023_local.toml`` (M = 300, fixed inducing locations, 20% of the clusters held out) for three
held-out splits, with the learned model scatter (the example's setting) and without it, and reports per run the
held-out reduced χ² and share inside the predictive 16-84% interval (all clusters, and those the fitted mixture
does not flag as outliers, from the Gaussian part's moments; and all clusters under the whole predictive, the
mixture's outlier class included: normal scores of the PIT, :class:`dustgp.validation.HoldoutReport`), the learned
scatter (τ, f) and outlier fraction, and the fit time. Needs
``../shared/data/hunt2023/HUNT2023.csv``.

    .venv/bin/python benchmarks/bench_hunt.py                 # 6 runs, ~5 min on 2 cores
    .venv/bin/python benchmarks/bench_hunt.py --splits 0 --scatter on
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from baseline import write_record
from dustgp.config import load_config
from dustgp.pipeline import run

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "hunt2023_local.toml"


def one_run(split: int, scatter: bool, folder: Path) -> dict[str, Any]:
    overrides = {"output": {"holdout_seed": split, "formats": ["netcdf"]}, "fit": {"learn_scatter": scatter}}
    result = run(load_config(EXAMPLE, overrides=overrides), out=folder, progress=False, figures=False)
    report = result.report
    checks, held = report["posterior_predictive"], report["holdout"]
    return {
        "split": split,
        "learn_scatter": scatter,
        "iterations": report["iterations"],
        "converged": report["converged"],
        "fit_seconds": report["fit_seconds"],
        "scatter": checks["scatter"],
        "outlier_fraction": checks["outlier_fraction"],
        "stars_inside_16_84": checks["inside_16_84"],
        "hyperparameters": report["hyperparameters"],
        "prior_warning": report.get("prior_warning"),
        **{f"holdout_{key}": value for key, value in held.items()},
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        "split  scatter  steps  fit s   tau    f      eps    chi2 all  inside all  flagged  chi2 rest  inside rest"
        "  chi2 PIT  inside PIT"
    )
    print(head)
    for r in rows:
        tau, f = r["scatter"]
        print(
            f"{r['split']:>5}  {'on' if r['learn_scatter'] else 'off':>7}  {r['iterations']:>5}  "
            f"{r['fit_seconds']:>5.1f}  {tau:5.3f}  {f:5.3f}  {r['outlier_fraction']:5.3f}  "
            f"{r['holdout_reduced_chi2']:>8.2f}  {r['holdout_inside_16_84']:>10.1%}  {r['holdout_flagged']:>7}  "
            f"{r['holdout_reduced_chi2_unflagged']:>9.2f}  {r['holdout_inside_16_84_unflagged']:>11.1%}"
            f"  {r['holdout_predictive_reduced_chi2']:>8.2f}  {r['holdout_predictive_inside_16_84']:>10.1%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scatter", choices=["on", "off", "both"], default="both")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "hunt2023.json")
    args = parser.parse_args()
    settings = {"on": [True], "off": [False], "both": [False, True]}[args.scatter]
    load = [os.getloadavg()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for split in args.splits:
            for scatter in settings:
                rows.append(one_run(split, scatter, Path(tmp) / f"{split}-{scatter}"))
                print_table(rows[-1:])
    load.append(os.getloadavg())
    print()
    print_table(rows)
    write_record("hunt2023", args, (load[0], load[1]), example=str(EXAMPLE.relative_to(HERE.parent)), rows=rows)


if __name__ == "__main__":
    main()
