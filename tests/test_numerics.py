"""Numerics that say when they fail: float32 limits in the SVI path, and fits that learn nothing (issue 11, item 5)."""

import logging

import numpy as np
import pytest

import dustgp
import dustgp.catalog
from dustgp.catalog import Catalog
from dustgp.fitting import load_fit
from dustgp.fitting import loop as fitting
from dustgp.grid import Grid
from dustgp.simulate import simulate

REGION = Grid(l=(60, 80, 6), b=(-5, 5, 3), d=(150, 350, 8), ghost_cells=0)
TRAIN = Grid(l=(60, 80, 3), b=(-5, 5, 2), d=(150, 350, 5), ghost_cells=1)
TINY_SVI = {"method": "svi", "inducing_points": 20, "particles": 4, "seed": 1, "progress": False}
# the paper's Gaussian likelihood without an error floor: the uncertainties reach the optimiser as given
AS_GIVEN = {"likelihood": "gaussian", "error_floor": 0.0}


@pytest.fixture(scope="module")
def sky():
    return simulate(REGION, n_stars=300, n_clumps=1, seed=5)


def _with_sigma(sky, sigma: float) -> Catalog:
    c = sky.catalog
    return Catalog.from_arrays(c.l, c.b, c.distance, c.extinction, np.full(len(c), sigma))


def test_float32_svi_on_stars_float32_cannot_resolve_computes_in_float64(sky, caplog) -> None:
    # 1e-6 mag is the smallest uncertainty a catalogue accepts; float32 resolves residuals of ~1 mag
    # extinctions to 1.2e-7 mag, so the likelihood's gradients would be rounding noise there (guard: 100x)
    catalog = _with_sigma(sky, dustgp.catalog.MIN_EXTINCTION_ERR)
    with caplog.at_level(logging.WARNING, logger="dustgp.fitting"):
        result = dustgp.fit(catalog, TRAIN, max_iterations=5, dtype="float32", **AS_GIVEN, **TINY_SVI)
    assert result.config.dtype == "float64"
    assert any("float32 resolves" in r.getMessage() and "float64" in r.getMessage() for r in caplog.records)
    assert result.learned
    assert np.all(np.isfinite(result.losses))


def test_float32_svi_with_ordinary_uncertainties_stays_float32(sky, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="dustgp.fitting"):
        result = dustgp.fit(sky.catalog, TRAIN, max_iterations=3, dtype="float32", **AS_GIVEN, **TINY_SVI)
    assert result.config.dtype == "float32"
    assert not any("float64" in r.getMessage() for r in caplog.records)


def test_without_the_float32_guard_tiny_sigmas_learn_nothing_and_say_so(sky, caplog, monkeypatch) -> None:
    # The failure the guard prevents, and the backstop that reports it: with sigma = 1e-12 mag in float32,
    # Adam's squared gradients (~1e50) overflow and every update is zero; the fit must not pass as a success.
    monkeypatch.setattr(dustgp.catalog.checks, "MIN_EXTINCTION_ERR", 0.0)  # where the limit is read
    monkeypatch.setattr(fitting, "_beyond_float32", lambda extinction, sigma: None)
    catalog = _with_sigma(sky, 1e-12)
    with caplog.at_level(logging.WARNING, logger="dustgp.fitting"):
        result = dustgp.fit(catalog, TRAIN, max_iterations=5, dtype="float32", **AS_GIVEN, **TINY_SVI)
    assert result.config.dtype == "float32"
    assert not result.learned
    assert any("learned nothing" in r.getMessage() for r in caplog.records)
    assert "LEARNED NOTHING" in result.summary()


def test_with_the_guard_the_same_stars_are_learned_from(sky, monkeypatch) -> None:
    monkeypatch.setattr(dustgp.catalog.checks, "MIN_EXTINCTION_ERR", 0.0)  # where the limit is read
    result = dustgp.fit(_with_sigma(sky, 1e-12), TRAIN, max_iterations=5, dtype="float32", **AS_GIVEN, **TINY_SVI)
    assert result.config.dtype == "float64"
    assert result.learned


def test_the_error_floor_keeps_tiny_uncertainties_within_float32(sky) -> None:
    # sqrt(sigma^2 + floor^2) >= 0.01 mag: the likelihood never sees the 1e-6 mag
    catalog = _with_sigma(sky, dustgp.catalog.MIN_EXTINCTION_ERR)
    result = dustgp.fit(catalog, TRAIN, max_iterations=2, dtype="float32", error_floor=0.01, **TINY_SVI)
    assert result.config.dtype == "float32"


def test_zero_learning_rates_learn_nothing_and_the_checkpoint_says_so(sky, tmp_path, caplog) -> None:
    path = tmp_path / "fit.ckpt"
    with caplog.at_level(logging.WARNING, logger="dustgp.fitting"):
        result = dustgp.fit(
            sky.catalog, TRAIN, max_iterations=3, lr=0.0, lr_covariance=0.0, checkpoint=path, **TINY_SVI
        )
    assert not result.learned
    assert any("learned nothing" in r.getMessage() for r in caplog.records)
    assert not load_fit(path).learned
    # resumed with a learning rate, it learns, and the record says so
    resumed = dustgp.fit(sky.catalog, TRAIN, resume=path, max_iterations=6, **{**TINY_SVI, "lr": 0.02})
    assert resumed.learned


def test_total_weight_beyond_float32_is_named() -> None:
    # 2e6 stars at 1e-3 mag: sum(1/sigma^2) = 2e12 mag^-2, whose gradients squared approach float32's 3.4e38
    sigma = np.full(2_000_000, 1e-3)
    why = fitting._beyond_float32(np.full(sigma.size, 1.0), sigma)
    assert why is not None
    assert "total weight" in why
    assert fitting._beyond_float32(np.full(10, 1.0), np.full(10, 0.05)) is None


@pytest.mark.parametrize(
    ("sigma", "largest_a"),
    [
        (1e-6, None),  # the smallest accepted uncertainty
        (0.05, 29.9),  # one star just under the largest accepted extinction (30 mag)
    ],
)
def test_newton_on_extreme_accepted_stars_learns_and_stays_finite(sky, sigma, largest_a) -> None:
    c = sky.catalog
    extinction = np.array(c.extinction)
    if largest_a is not None:
        extinction[np.argmax(c.distance)] = largest_a
    catalog = Catalog.from_arrays(c.l, c.b, c.distance, extinction, np.full(len(c), sigma))
    result = dustgp.fit(
        catalog, TRAIN, method="newton", inducing_points=20, max_iterations=4, progress=False, **AS_GIVEN
    )
    assert result.learned
    assert np.all(np.isfinite(result.losses))
    dmap = result.predict(TRAIN, samples=20, progress=False)
    assert np.all(np.isfinite(dmap.extinction_percentiles))
