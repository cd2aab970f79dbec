"""Shared fixtures: seeded random generators, the path to the shared real data, the CLI as on a terminal, an in-process
Dask cluster."""

import logging
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from dustgp.cli import main

matplotlib.use("Agg")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20221)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def terminal(capsys: pytest.CaptureFixture[str]):
    """Run ``main`` with logging as on a terminal (no pytest handlers on the root logger): (status, stderr lines)."""

    def run(*args: str) -> tuple[int, list[str]]:
        root = logging.getLogger()
        saved, level = root.handlers[:], root.level
        for handler in saved:
            root.removeHandler(handler)
        capsys.readouterr()
        try:
            code = main(list(args))
        finally:
            for handler in root.handlers[:]:  # the stderr handler main() installed
                root.removeHandler(handler)
            for handler in saved:
                root.addHandler(handler)
            root.setLevel(level)
        return code, capsys.readouterr().err.splitlines()

    return run


@pytest.fixture(scope="module")
def local_client():
    """An in-process Dask cluster's Client, one per test module (see tiles_support.local_cluster)."""
    from tiles_support import local_cluster  # imported here: it loads dustgp.tiles, which most tests never need

    with local_cluster() as client:
        yield client
