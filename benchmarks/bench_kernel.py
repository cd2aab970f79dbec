"""Forward + backward of ``K_xz @ weights``: plain autograd (as ``DustGP.phi`` writes it) against
:func:`dustgp.projection.rbf_project`.

Usage::

    .venv/bin/python benchmarks/bench_kernel.py [--sizes 14800 100000] [--repeats 7] [--threads 2]

Prints a table and writes ``benchmarks/results/kernel.json``. The variants are run interleaved, repetition by
repetition, so that load from other processes falls on all of them alike; the table reports the median and
the minimum over repetitions.

Two geometries: ``compact`` (cells within ±3 scale lengths, no entry of K underflows) and ``wide`` (±10 scale
lengths, like a map 400 pc across at gamma = 20 pc: about half of K underflows and a tenth of it lands in
float32's subnormal range, where plain ``exp`` is slow).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dustgp.projection import Workspace, rbf_project

RESULTS = Path(__file__).resolve().parent / "results" / "kernel.json"
GEOMETRIES = {"compact": 3.0, "wide": 10.0}


def naive_project(x, z, gamma, alpha, weights):
    """The current model code: ``DustGP.cross_covariance(x) @ weights``."""
    xs, zs = x / gamma, z / gamma
    sq = (xs * xs).sum(-1, keepdim=True) - 2.0 * xs @ zs.T + (zs * zs).sum(-1)
    return alpha * torch.exp(-0.5 * sq.clamp(min=0.0)) @ weights


def make_inputs(n: int, m: int, s: int, half_width: float, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, generator=gen) * 2 - 1) * half_width
    z = x[torch.randperm(n, generator=gen)[:m]] + 0.3 * torch.randn(m, 3, generator=gen)
    gamma = torch.tensor([1.0, 1.1, 0.9])
    alpha = torch.tensor(0.5)
    weights = torch.randn(m, s, generator=gen) / m**0.5
    return [x, z.requires_grad_(), gamma.requires_grad_(), alpha.requires_grad_(), weights.requires_grad_()]


def time_once(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor], grad_out: torch.Tensor) -> float:
    for t in inputs:
        t.grad = None
    start = time.perf_counter()
    fn(*inputs).backward(grad_out)
    return time.perf_counter() - start


def run(sizes: list[int], m: int, s: int, repeats: int, geometries: list[str]) -> list[dict]:
    workspace = Workspace()
    variants: dict[str, Callable[..., torch.Tensor]] = {
        "naive autograd": naive_project,
        "rbf_project (default)": rbf_project,
        # as training calls it: one workspace reused from call to call, so no n × M buffer is faulted in afresh
        "rbf_project + workspace": lambda *t: rbf_project(*t, workspace=workspace),
        # small blocks, recomputed: fastest on an idle CPU, fragile when other processes share the cores
        "rbf_project 4MiB blocks": lambda *t: rbf_project(*t, recompute=True, chunk_size=1000),
        # one block for all of x: the fewest calls, the most robust under load
        "rbf_project one block": lambda *t: rbf_project(*t, chunk_size=t[0].shape[0]),
    }
    rows = []
    for geometry in geometries:
        for n in sizes:
            inputs = make_inputs(n, m, s, GEOMETRIES[geometry])
            grad_out = torch.randn(n, s, generator=torch.Generator().manual_seed(1))
            for fn in variants.values():  # warm-up: allocator, MKL, lazy init
                time_once(fn, inputs, grad_out)
            times: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(repeats):
                for name, fn in variants.items():
                    times[name].append(time_once(fn, inputs, grad_out))
            base = statistics.median(times["naive autograd"])
            base_min = min(times["naive autograd"])
            for name, ts in times.items():
                med = statistics.median(ts)
                rows.append(
                    {
                        "geometry": geometry,
                        "n": n,
                        "M": m,
                        "S": s,
                        "variant": name,
                        "median_s": med,
                        "min_s": min(ts),
                        "times_s": ts,
                        "speedup_median": base / med,
                        # under intermittent load from other processes the minimum is the steadier figure
                        "speedup_min": base_min / min(ts),
                    }
                )
                timings = f"{med * 1e3:9.1f} {min(ts) * 1e3:9.1f} {base / med:7.2f}x {base_min / min(ts):7.2f}x"
                print(f"{geometry:8s} {n:>7d} {name:24s} {timings}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[14_800, 100_000])
    parser.add_argument("--inducing", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--geometry", nargs="+", choices=sorted(GEOMETRIES), default=["compact", "wide"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}, load average {load_before}")
    print(f"{'geometry':8s} {'n':>7s} {'variant':24s} {'median ms':>9s} {'min ms':>9s} {'x (med)':>8s} {'x (min)':>8s}")
    rows = run(args.sizes, args.inducing, args.samples, args.repeats, args.geometry)
    record = {
        "benchmark": "forward + backward of K_xz @ weights, float32",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
        },
        # Other processes on the machine distort timings; the load average says how much to trust them.
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "repeats": args.repeats,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
