"""Are the bands calibrated where the prior is right? Fits to a sky drawn from the model's own prior.

The realistic mock of ``bench_likelihood.py`` has sharp structures that no stationary RBF draws, so its bands can miss
for two reasons: the prior (misspecified) or the inference (the inducing points, q(u), the hyperparameters the ELBO
picks). This sky removes the first: ``simulate(structures="gaussian-field")``, the background (1.6e-3 mag/pc) times
10 to the power of a Gaussian process with the model's RBF kernel (scale lengths 30 / 30 / 25 pc in x / y / z, 0.1
dex²) behind d_min, on the paper's Section 3 region; 60,000 stars with sigma_A = sqrt(0.05² + (0.05 A)²), true
distances, no outliers. An exact posterior's 16-84% bands hold the truth 68% of the time on such a sky, whatever its
hyperparameters, if they are the truth's. The cases, fitted as ``bench_likelihood.py`` fits its twin
(``method="newton"``, Gaussian likelihood, 20×20×35 + 2 ghost cells, predicted on 50×50×52 with 100 samples) unless
said otherwise:

* ``held``: the hyperparameters held at the field's (``learn_hyperparameters=False``): what q(u) with M inducing
  points makes of the right prior;
* ``learned``: the default, hyperparameters learned from the default start: what the ELBO picks at M;
* ``held-random``, ``learned-random``: the same with the inducing points started at random stars
  (``inducing_layout="random"``, as before the greedy layout), side by side;
* ``held-realistic``, ``learned-realistic`` (asked for with ``--cases``): the same sky seen as
  ``bench_likelihood.py``'s realistic mock sees its own (5-20% distance errors, the catalogue distance scattered and
  the error reported; 3% outliers of +0.3-1.5 mag), fitted with the default likelihood (mixture + distance
  quadrature) on the distances read under a uniform space density (``Catalog.with_volume_prior``): what the
  catalogue's errors cost where the prior is right. Each row gives its median error over the clean row of its kind
  (``error_ratio_to_clean``).

Each row: the hyperparameters, the final ELBO (a ``learned`` row also gives its excess over the ``held`` row of its
layout: positive when the bound prefers its own hyperparameters to the truth's), the median density error, the share
of cells (and of the volume) whose true density and extinction lie inside the 16-84% band, and the share of
sightlines whose foreground extinction (to d_min) does.

    .venv/bin/python benchmarks/bench_calibration.py --seeds 1 2 3 --out benchmarks/results/calibration-m1000.json
    .venv/bin/python benchmarks/bench_calibration.py --seeds 1 --inducing-points 2000 \\
        --out benchmarks/results/calibration-m2000-seed1.json
    .venv/bin/python benchmarks/bench_calibration.py --seeds 1 2 3 --cases held learned held-realistic \\
        learned-realistic --out benchmarks/results/calibration-realistic-m1000.json
    .venv/bin/python benchmarks/bench_calibration.py --seeds 1 --cases held learned held-realistic \\
        learned-realistic --inducing-points 2000 --out benchmarks/results/calibration-realistic-m2000-seed1.json
    .venv/bin/python benchmarks/bench_calibration.py --seeds 1 2 3 --cases held-realistic learned-realistic \\
        --missing-information objective --out benchmarks/results/calibration-realistic-objective-m1000.json

``--missing-information objective`` fits with the stars' missing information counted in the objective
(``FitConfig.missing_information``); its fits are cached apart (``-missing-objective`` in the name).

Fits are cached in the temporary directory (``field-<case>-seed<N>-m<M>.ckpt``); a cached fit is resumed, which runs
one more step before its stop rule fires again, and its ``fit_seconds`` add up over the runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

import dustgp
from bench_fit import write_json
from bench_likelihood import CHECKPOINTS, FIT, PREDICT, REALISTIC, TRAIN, TRUTH, score_stars
from bench_scaling import machine, versions
from dustgp.fitting import INTERRUPTED
from dustgp.simulate import simulate
from dustgp.validation import compare_to_truth

HERE = Path(__file__).resolve().parent
BACKGROUND = 1.6e-3
FIELD = {"field_length_scale": (30.0, 30.0, 25.0), "field_scale": 0.1}
MOCK = {"n_stars": 60_000, "structures": "gaussian-field", "noise": 0.05, "noise_floor": 0.05, "background": BACKGROUND}
CASES = ("held", "learned", "held-random", "learned-random", "held-realistic", "learned-realistic")
#: What runs unless ``--cases`` says otherwise: the sky as the twin sees its own
DEFAULT_CASES = CASES[:4]


def mock(seed: int, field: dict[str, Any], realistic: bool = False) -> Any:
    """The prior sky of ``seed``; with ``realistic``, seen through the realistic mock's distance errors and outliers."""
    return simulate(TRUTH, seed=seed, **MOCK, **field, **(REALISTIC if realistic else {}))


def fit_options(case: str, inducing_points: int, field: dict[str, Any], missing: bool | str = True) -> dict[str, Any]:
    options: dict[str, Any] = {**FIT, "inducing_points": inducing_points, "missing_information": missing}
    if not case.endswith("-realistic"):  # the twin's likelihood; the realistic cases keep the default
        options |= {"likelihood": "gaussian", "error_floor": 0.0}
    options["inducing_layout"] = "random" if case.endswith("-random") else "greedy"
    if case.startswith("held"):
        options |= {
            "length_scale": list(field["field_length_scale"]),
            "scale": field["field_scale"],
            "mean": float(np.log10(BACKGROUND)),
            "learn_hyperparameters": False,
        }
    return options


def foreground_coverage(dmap: Any, sky: Any) -> float:
    """Share of sightlines whose true extinction to d_min lies inside its 16-84% band."""
    front = dmap.grid.ghost_cells - 1
    if front < 0:
        return float("nan")
    truth = sky.density_at(*dmap.grid.cell_centers_lbd())
    true_front = np.sum(truth[: front + 1] * dmap.grid.path_lengths[: front + 1, None, None], axis=0)
    lo, hi = (dmap.extinction(q).value[front] for q in (16, 84))
    return float(np.mean((true_front >= lo) & (true_front <= hi)))


def run_case(case: str, seed: int, inducing_points: int, field: dict[str, Any], missing: bool | str) -> dict[str, Any]:
    CHECKPOINTS.mkdir(exist_ok=True)
    realistic = case.endswith("-realistic")
    sky = mock(seed, field, realistic)
    catalog = sky.catalog.with_volume_prior() if realistic else sky.catalog
    tag = "" if field == FIELD else "-g{:g}-{:g}-{:g}-a{:g}".format(*field["field_length_scale"], field["field_scale"])
    tag += "" if missing is True else f"-missing-{missing}"
    checkpoint = CHECKPOINTS / f"field-{case}-seed{seed}-m{inducing_points}{tag}.ckpt"
    where = {"resume": checkpoint} if checkpoint.exists() else {"checkpoint": checkpoint}
    options = fit_options(case, inducing_points, field, missing)
    fitted = dustgp.fit(catalog, TRAIN, progress=False, seed=seed, **where, **options)
    if fitted.stopped_by in INTERRUPTED:
        raise SystemExit(f"{case}, seed {seed}: fit {fitted.stopped_by} after {fitted.iterations} steps")
    dmap = fitted.predict(PREDICT, samples=100, progress=False)
    return {
        "case": case,
        "seed": seed,
        "inducing_points": inducing_points,
        "steps": fitted.iterations,
        "converged": fitted.converged,
        "fit_seconds": fitted.seconds,
        "elbo": float(fitted.elbo[-1]),
        "hyperparameters": fitted.hyperparameters(),
        "truth": compare_to_truth(dmap, sky).to_dict(),
        "foreground_extinction_coverage_16_84": foreground_coverage(dmap, sky),
        "stars": score_stars(fitted, sky),
    }


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'case':17s} {'seed':>4s} {'M':>5s} {'steps':>5s} {'conv':>5s} {'fit s':>6s} {'gamma x/y/z pc':>15s} "
        f"{'alpha':>6s} {'ELBO':>10s} {'d ELBO':>7s} {'med err':>8s} {'cov rho':>8s} {'cov A':>6s} "
        f"{'vol rho':>8s} {'vol A':>6s} {'front':>6s} {'x clean':>8s}"
    )
    for r in rows:
        t, h = r["truth"], r["hyperparameters"]
        gamma = "/".join(f"{g:.0f}" for g in h["length_scale_pc"])
        excess = r.get("elbo_excess_over_held")
        ratio = r.get("error_ratio_to_clean")
        print(
            f"{r['case']:17s} {r['seed']:4d} {r['inducing_points']:5d} {r['steps']:5d} {r['converged']!s:>5s} "
            f"{r['fit_seconds']:6.0f} {gamma:>15s} {h['scale_dex2']:6.3f} {r['elbo']:10.1f} "
            f"{'' if excess is None else f'{excess:7.1f}':>7s} {t['median_relative_error']:8.2%} "
            f"{t['coverage_16_84']:8.1%} {t['extinction_coverage_16_84']:6.1%} {t['volume_coverage_16_84']:8.1%} "
            f"{t['volume_extinction_coverage_16_84']:6.1%} {r['foreground_extinction_coverage_16_84']:6.1%} "
            f"{'' if ratio is None else f'{ratio:8.2f}':>8s}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), choices=CASES)
    parser.add_argument(
        "--inducing-points", type=int, default=FIT["inducing_points"], help="M of every fit (default %(default)s)"
    )
    parser.add_argument(
        "--field-length-scale",
        type=float,
        nargs=3,
        default=FIELD["field_length_scale"],
        metavar=("GX", "GY", "GZ"),
        help="the field's scale lengths, pc (default %(default)s)",
    )
    parser.add_argument(
        "--field-scale", type=float, default=FIELD["field_scale"], help="the field's variance, dex² (default 0.1)"
    )
    parser.add_argument(
        "--missing-information",
        choices=["true", "false", "objective"],
        default="true",
        help="FitConfig.missing_information of every fit (default %(default)s)",
    )
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/calibration-*.json)")
    args = parser.parse_args()
    missing = {"true": True, "false": False}.get(args.missing_information, args.missing_information)
    field = {"field_length_scale": tuple(args.field_length_scale), "field_scale": args.field_scale}
    record: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "torch_threads": torch.get_num_threads()},
        "versions": versions(),
        "mock": {**MOCK, **field},
        "train": repr(TRAIN),
        "predict": repr(PREDICT),
        "fit": {**FIT, "inducing_points": args.inducing_points, "missing_information": missing},
    }
    rows = []
    for seed in args.seeds:
        held: dict[str, float] = {}
        clean_error: dict[str, float] = {}
        for case in args.cases:
            row = run_case(case, seed, args.inducing_points, field, missing)
            kind, _, layout = case.partition("-")
            if kind == "held":
                held[layout] = row["elbo"]
            elif layout in held:
                row["elbo_excess_over_held"] = row["elbo"] - held[layout]
            error = row["truth"]["median_relative_error"]
            if not layout:
                clean_error[kind] = error
            elif layout == "realistic" and kind in clean_error:
                row["error_ratio_to_clean"] = error / clean_error[kind]
            rows.append(row)
            print_rows(rows[-1:])
            print(json.dumps(row, default=str), flush=True)
    print()
    print_rows(rows)
    seeds = "-".join(str(s) for s in args.seeds)
    out = args.out or HERE / "results" / f"calibration-m{args.inducing_points}-seeds{seeds}.json"
    write_json(out, record | {"rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
