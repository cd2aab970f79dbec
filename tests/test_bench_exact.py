"""The exact-posterior benchmark's effective sample size, against chains whose autocorrelation is known."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench_exact(monkeypatch_module):
    monkeypatch_module.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_exact", BENCH / "bench_exact.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def ar1(rho: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty(n)
    x[0] = rng.standard_normal() / np.sqrt(1.0 - rho**2)
    noise = rng.standard_normal(n)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + noise[i]
    return x


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_ess_of_an_ar1_chain(bench_exact, rho):
    """ESS = n (1 - rho) / (1 + rho) for AR(1). Over 20 000 draws the estimate's relative sd is about
    sqrt(2 (2 W + 1) / n) for a window W of ~5 autocorrelation times: 14% at rho = 0.9, 6% at 0.5; 30% is about two
    of the largest."""
    n = 20_000
    expected = n * (1.0 - rho) / (1.0 + rho)
    for seed in (1, 2, 3):
        assert bench_exact.effective_sample_size(ar1(rho, n, seed)) == pytest.approx(expected, rel=0.3)


def test_ess_never_exceeds_the_draws_for_anticorrelated_chains(bench_exact):
    """An alternating chain is super-efficient; the estimate is capped at the number of draws."""
    assert bench_exact.effective_sample_size(ar1(-0.5, 5000, 1)) <= 5000
