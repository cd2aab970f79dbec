"""The Section 3 newton fit, this checkout against a baseline revision, side by side seed by seed.

For each fit seed, the full-size Section 3 experiment (``bench_fit.FULL``: 120,000 stars, 20×20×35 + 2 training
grid, M = 1000, the default coarse start, prediction on 100×100×105 + 2 with 200 samples) is fitted and scored once
with the ``src/`` of ``--baseline`` (a git revision, in a temporary worktree) and then once with this checkout,
each in a fresh Python process (``baseline.measure_in``), so both meet the same machine load. Prints a table and
writes JSON with both rows per seed and the ratio of training times.

    .venv/bin/python benchmarks/bench_fit_revision.py --baseline e1043ed --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from baseline import CURRENT_SRC, measure_in, revision_src, write_record
from bench_fit import print_table

HERE = Path(__file__).resolve().parent

CODE = """
import json, bench_fit
sizes = bench_fit.FULL
sky, train, grid = bench_fit.section3(sizes)
row = bench_fit.fit_and_score(sky, train, grid, sizes, method="newton", rule="map", seed={seed}, device="cpu")
print(json.dumps(row, default=str))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git revision to compare with (e.g. a commit hash)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "section3-revision.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    seeds: list[dict[str, Any]] = []
    with revision_src(args.baseline) as baseline_src:
        for seed in args.seeds:
            code = CODE.format(seed=seed)
            base = measure_in(baseline_src, code, args.threads)
            current = measure_in(CURRENT_SRC, code, args.threads)
            ratio = base["train_seconds"] / current["train_seconds"]
            seeds.append({"seed": seed, "baseline": base, "current": current, "train_ratio": ratio})
            print(f"seed {seed}: baseline {base['train_seconds']:.1f} s, current {current['train_seconds']:.1f} s")
    for label in ("baseline", "current"):
        print(f"\n{label} ({args.baseline if label == 'baseline' else 'this checkout'}):")
        print_table([s[label] for s in seeds])
    print("\ntraining time ratio (baseline / current): " + ", ".join(f"{s['train_ratio']:.2f}" for s in seeds))
    write_record("bench_fit_revision", args, (load_before, os.getloadavg()), seeds=seeds)


if __name__ == "__main__":
    main()
