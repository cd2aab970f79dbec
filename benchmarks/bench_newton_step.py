"""The parts of one newton outer step on the Section 3 problem, this checkout against a baseline revision.

Builds the paper's Section 3 problem (120,000 stars, 20 × 20 × 35 + 2 ghost cells, M = 1000, float64) at a fixed
point (theta, q) and times, ``--repeats`` times each, what an accepted outer step costs: the geometry at a new theta
(``Geometry.at``: K_zz, its factor and inverse, K_xz), the exact ELBO there (``evaluate``) and the ELBO with its
gradients in q and theta (``evaluate(...).with_gradients``). Each tree runs in a fresh subprocess
(``benchmarks/baseline.py``), one after the other, with the same threads. Both must give the same ELBO and the same
theta gradient (to rounding): the comparison is of cost, at equal results.

    .venv/bin/python benchmarks/bench_newton_step.py --baseline ade638e

Writes ``benchmarks/results/newton-step.json``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from baseline import CURRENT_SRC, measure_in, revision_src, write_record

HERE = Path(__file__).resolve().parent

#: Run in each tree: build the problem at a fixed point, time the three parts, print JSON.
CHILD = """
import json, statistics, time
import numpy as np, torch
from bench_scaling import region_grid
from dustgp.fitting.exact_elbo import Geometry, NewtonProblem, evaluate, pack
from dustgp.sightlines import GaussianStatistics, Sightlines
from dustgp.simulate import paper_experiment

torch.manual_seed(0)
cat = paper_experiment(n_stars=120_000, seed=0).catalog
train = region_grid((20, 20, 35), 2)
lines = Sightlines.from_positions(train, cat.l, cat.b, cat.distance)
kept = lines.star_index
stats = GaussianStatistics.from_stars(lines, cat.extinction[kept], cat.extinction_err[kept])
cells = torch.as_tensor(train.cell_centers_xyz()) / 100.0  # internal unit: 100 pc
problem = NewtonProblem.build(cells, train.n_d, stats, fixed_z=None)
z = cells[torch.randperm(cells.shape[0])[:1000]] + 0.02 * torch.randn(1000, 3, dtype=torch.float64)
theta = pack(-2.75, 0.04, torch.tensor([0.4, 0.3, 0.37]), z)
m = 0.3 * torch.randn(1000, dtype=torch.float64)
root = torch.randn(1000, 1000, dtype=torch.float64) / 100.0
l_precision = torch.linalg.cholesky(5.0 * torch.eye(1000, dtype=torch.float64) + root @ root.T)

def timed(function):
    function()
    seconds = []
    for _ in range({repeats}):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result

geometry_s, geometry = timed(lambda: Geometry.at(problem, theta))
evaluate_s, state = timed(lambda: evaluate(problem, geometry, m, l_precision))
gradients_s, state = timed(lambda: evaluate(problem, geometry, m, l_precision).with_gradients(problem))
print(json.dumps({{
    "geometry_s": geometry_s, "evaluate_s": evaluate_s, "evaluate_with_gradients_s": gradients_s,
    "elbo": state.elbo, "grad_theta_head": state.grad_theta[:8].tolist(),
}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare with (e.g. a commit hash)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "newton-step.json")
    args = parser.parse_args()
    code = CHILD.format(repeats=args.repeats)
    load_before = os.getloadavg()
    with revision_src(args.baseline) as baseline_src:
        rows = {"baseline": measure_in(baseline_src, code), "current": measure_in(CURRENT_SRC, code)}
    load_after = os.getloadavg()
    print(f"{'tree':9} {'geometry s':>10} {'evaluate s':>10} {'+gradients s':>12} {'ELBO':>16}")
    for name, r in rows.items():
        print(
            f"{name:9} {r['geometry_s']:10.3f} {r['evaluate_s']:10.3f} {r['evaluate_with_gradients_s']:12.3f} "
            f"{r['elbo']:16.6f}"
        )
    ratio = rows["baseline"]["evaluate_with_gradients_s"] / rows["current"]["evaluate_with_gradients_s"]
    print(f"evaluate + gradients: {ratio:.2f}x faster")
    write_record("newton-step", args, (load_before, load_after), speedup_evaluate_with_gradients=ratio, **rows)


if __name__ == "__main__":
    main()
