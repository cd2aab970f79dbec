"""Shared by the command-line tests: a tiny run file, builders of broken inputs, and the one-error-line check."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table

#: A run file small enough to fit in seconds: ``RUN.format(iterations=N)``.
RUN = """
[simulate]
n_stars = 3000
n_clumps = 1
seed = 4
region = {{ l = [60, 70, 20], b = [-4, 4, 10], d = [150, 300, 30] }}

[grid]
l = [60, 70, 5]
b = [-4, 4, 4]
d = [150, 300, 8]
ghost_cells = 1

[fit]
inducing_points = 60
length_scale = 20.0
max_iterations = {iterations}
seed = 1

[predict]
refine = 2
samples = 20
keep_samples = 4

[output]
holdout = 0.2
formats = ["netcdf", "fits"]
"""


def assert_one_error_line(err: list[str], message: str) -> None:
    """One ERROR line matching ``message``, last; any other line is a one-line warning; no traceback."""
    assert re.search(r"^ERROR dustgp: .*" + message, err[-1]), err
    assert all(line.startswith("WARNING ") for line in err[:-1]), err


def write_run_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return str(path)


def fit_args(tmp_path: Path, old: str, new: str) -> list[str]:
    """``dustgp fit`` of the tiny run file with ``old`` replaced by ``new``, into a folder of ``tmp_path``."""
    return ["fit", write_run_file(tmp_path, RUN.format(iterations=5).replace(old, new)), "--out", str(tmp_path / "out")]


def catalog_run_text(tmp_path: Path, *, l: float, nan_rows: int = 0) -> str:
    table = Table()
    table["l"] = np.full(20, l)
    table["b"] = np.linspace(-3, 3, 20)
    table["distance"] = np.linspace(160, 290, 20)
    table["A0"] = np.linspace(0.1, 0.5, 20)
    table["A0_err"] = np.full(20, 0.05)
    table["A0"][:nan_rows] = np.nan
    table.write(tmp_path / "stars.csv", overwrite=True)
    run = RUN.format(iterations=10)
    return '[catalog]\npath = "stars.csv"\n\n' + run[run.index("[grid]") :]


def damaged_checkpoint(tmp_path: Path, kind: str) -> str:
    path = tmp_path / "fit.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(1).bytes(5000))
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "crafted":  # a pickle that only an unsafe load would run
        torch.save({"format": "dustgp-checkpoint-1", "payload": Path("x")}, path)
    elif kind == "truncated":
        torch.save({"format": "dustgp-checkpoint-1", "model": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:2000])
    return str(path)
