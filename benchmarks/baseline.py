"""Run a benchmark's measurement against another revision of dustgp, side by side with this checkout.

A speed claim is a ratio against a baseline measured on the same machine at the same time. The baseline is the
``src/`` of a git revision, checked out into a temporary worktree; each measurement runs in a fresh Python
subprocess with that ``src`` first on ``sys.path`` and the benchmark scripts importable, and prints its result as
JSON on its last line of output.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench_fit import machine, write_json
from bench_scaling import versions

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CURRENT_SRC = ROOT / "src"


@contextlib.contextmanager
def revision_src(revision: str) -> Iterator[Path]:
    """The ``src/`` directory of ``revision`` in a temporary git worktree, removed on exit."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), revision], check=True
        )
        try:
            yield tree / "src"
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)


def measure_in(src: Path, code: str, threads: int | None = None) -> Any:
    """Run ``code`` in a subprocess importing dustgp from ``src``; return the JSON its last output line holds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(HERE)])}
    if threads is not None:
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"measurement failed in {src}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_record(benchmark: str, args: argparse.Namespace, load: tuple[Any, Any], **fields: Any) -> None:
    """Write ``fields`` with the benchmark's name, date, arguments, machine, versions and load average (before
    and after) to ``args.out`` as JSON, and say where."""
    record = {
        "benchmark": benchmark,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": machine(),
        "versions": versions(),
        "load_average_before": load[0],
        "load_average_after": load[1],
        **fields,
    }
    write_json(args.out, record)
    print(f"wrote {args.out}")
