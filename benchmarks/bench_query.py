"""Throughput of dustgp map queries (points per second) for every query mode.

The map has the paper's prediction-grid size (100 x 100 x 105 region cells, docs: Method §9) plus two ghost
cells, float64 summaries and float32 joint samples, as :func:`dustgp.predict` makes them. Query positions are
uniform in the map's (l, b) box and in 0 .. 1.04 d_max (so about 4% fall beyond the map and give NaN).

Usage::

    python benchmarks/bench_query.py [--points 1000000] [--samples 12] [--repeats 3] [--no-cli]

Also runs ``dustgp query MAP --table IN --out OUT`` on the same points in a fresh process (``--no-cli`` skips
it) and times its phases. Prints a table and writes ``benchmarks/results/query.json`` (machine, versions,
threads, numbers).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import astropy
import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table

import dustgp
from dustgp.grid import Grid
from dustgp.io import read_map, write_netcdf
from dustgp.posterior_map import DEFAULT_KEEP_SAMPLES, PosteriorMap
from dustgp.query import DustMapQuery, query_table

RESULTS = Path(__file__).resolve().parent / "results" / "query.json"
MODES = [
    ("mean", {}),
    ("std", {}),
    ("median", {}),
    ("percentile", {"pct": [16.0, 50.0, 84.0]}),
    ("percentile (from samples)", {"pct": 30.0}),
    ("random_sample", {}),
    ("random_sample_per_pix", {}),
    ("samples", {}),
]


def make_map(n_samples: int, seed: int = 0) -> PosteriorMap:
    grid = Grid(l=(50, 90, 100), b=(-10, 10, 100), d=(180, 500, 105), ghost_cells=2)
    rng = np.random.default_rng(seed)
    rho = rng.lognormal(-6.5, 1.0, grid.shape)
    ext = np.cumsum(rho * grid.path_lengths[:, None, None], axis=0)
    levels = np.array([2.5, 16.0, 50.0, 84.0, 97.5])
    factors = (1.0 + (levels - 50.0) / 100.0)[:, None, None, None]
    samples = (rho * rng.lognormal(0.0, 0.3, (n_samples, *grid.shape))).astype(np.float32)
    return PosteriorMap(
        grid=grid,
        percentiles=levels,
        density_mean=rho,
        density_std=0.3 * rho,
        density_percentiles=factors * rho,
        extinction_mean=ext,
        extinction_std=0.2 * ext,
        extinction_percentiles=factors * ext,
        density_samples=samples,
    )


def best_time(fn, repeats: int) -> float:
    fn()  # untimed warm-up at full size: first-touch page faults of the temporaries are not the query's cost
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def machine() -> dict:
    threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "thread_env": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "astropy": astropy.__version__,
        "dustgp": dustgp.__version__,
        "note": "queries are single-threaded numpy (searchsorted, gathers, elementwise arithmetic)",
        "load_average_at_start": os.getloadavg(),
    }


def cli_rows(dmap: PosteriorMap, l: np.ndarray, b: np.ndarray, d: np.ndarray) -> list[dict]:
    """``dustgp query MAP --table IN --out OUT`` on all the points, once, end to end and phase by phase.

    The command runs in a fresh interpreter (start-up, imports, reading the map with its samples, reading the
    table, querying, writing the table). The phases are then timed in this process on the same files. Tables
    are FITS (binary): an ECSV table of 10^6 rows is text, and reading and writing it dominates.
    """
    n = l.size
    with tempfile.TemporaryDirectory() as tmp:
        map_path, points, out = Path(tmp) / "map.nc", Path(tmp) / "points.fits", Path(tmp) / "out.fits"
        write_netcdf(dmap, map_path)
        Table({"l": l, "b": b, "d": d}, units={"l": "deg", "b": "deg", "d": "pc"}).write(points)
        command = [sys.executable, "-m", "dustgp.cli", "query", str(map_path), "--table", str(points)]
        command += ["--out", str(out), "--quiet"]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - start
        assert len(Table.read(out)) == n
        phases = {}
        start = time.perf_counter()
        read = read_map(map_path)
        phases["read_map_s"] = time.perf_counter() - start
        start = time.perf_counter()
        table = Table.read(points)
        phases["read_table_s"] = time.perf_counter() - start
        start = time.perf_counter()
        answer = query_table(read, table)
        phases["query_table_s"] = time.perf_counter() - start
        start = time.perf_counter()
        answer.write(out, overwrite=True)
        phases["write_table_s"] = time.perf_counter() - start
    return [
        {
            "mode": "mean",
            "api": "dustgp query --table (FITS in/out, fresh process)",
            "points": n,
            "seconds": wall,
            "points_per_s": n / wall,
            "table_setup_s": 0.0,
            "phases_in_process": phases,
        },
        {
            "mode": "mean",
            "api": "query_table (Table in/out)",
            "points": n,
            "seconds": phases["query_table_s"],
            "points_per_s": n / phases["query_table_s"],
            "table_setup_s": 0.0,
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument(
        "--sample-points",
        type=int,
        default=100_000,
        help="points for mode='samples' (its output is points x samples)",
    )
    parser.add_argument(
        "--samples", type=int, default=DEFAULT_KEEP_SAMPLES, help="joint samples kept in the map (default: predict's)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-cli", action="store_true", help="skip the `dustgp query --table` rows")
    args = parser.parse_args()

    host = machine()
    dmap = make_map(args.samples)
    grid = dmap.grid
    rng = np.random.default_rng(1)
    n = args.points
    l = rng.uniform(grid.l_edges[0], grid.l_edges[-1], n)
    b = rng.uniform(grid.b_edges[0], grid.b_edges[-1], n)
    d = rng.uniform(0.0, 1.04 * grid.d_max, n)

    rows = []
    query = DustMapQuery(dmap, seed=0)
    for name, kwargs in MODES:
        mode = name.split(" ")[0]
        m = args.sample_points if mode == "samples" else n
        start = time.perf_counter()
        query.query_lbd(l[:10], b[:10], d[:10], mode=mode, **kwargs)  # builds this mode's lookup table
        setup = time.perf_counter() - start
        seconds = best_time(
            lambda m=m, mode=mode, kwargs=kwargs: query.query_lbd(l[:m], b[:m], d[:m], mode=mode, **kwargs),
            args.repeats,
        )
        rows.append(
            {
                "mode": name,
                "api": "query_lbd (arrays)",
                "points": m,
                "seconds": seconds,
                "points_per_s": m / seconds,
                "table_setup_s": setup,
            }
        )

    coords = SkyCoord(l=l * u.deg, b=b * u.deg, distance=d * u.pc, frame="galactic")
    seconds = best_time(lambda: query.query(coords, mode="mean"), args.repeats)
    rows.append(
        {
            "mode": "mean",
            "api": "query(SkyCoord, galactic)",
            "points": n,
            "seconds": seconds,
            "points_per_s": n / seconds,
            "table_setup_s": 0.0,
        }
    )
    icrs = coords[: n // 10].icrs
    seconds = best_time(lambda: query.query(icrs, mode="mean"), args.repeats)
    rows.append(
        {
            "mode": "mean",
            "api": "query(SkyCoord, icrs)",
            "points": icrs.size,
            "seconds": seconds,
            "points_per_s": icrs.size / seconds,
            "table_setup_s": 0.0,
        }
    )

    if not args.no_cli:
        rows += cli_rows(dmap, l, b, d)

    print(f"map {grid!r}, {dmap.n_samples} samples; best of {args.repeats}")
    print(f"{'mode':28s} {'api':28s} {'points':>9s} {'seconds':>9s} {'points/s':>12s} {'setup s':>8s}")
    for r in rows:
        print(
            f"{r['mode']:28s} {r['api']:28s} {r['points']:9d} {r['seconds']:9.4f} "
            f"{r['points_per_s']:12.3e} {r['table_setup_s']:8.3f}"
        )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    host["load_average_at_end"] = os.getloadavg()
    report = {
        "benchmark": "query",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "map": {"grid": repr(grid), "shape": list(grid.shape), "n_samples": dmap.n_samples},
        "args": vars(args),
        "machine": host,
        "results": rows,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
