"""The foreground check: the stars just behind d_min say whether there is dust in front of it; where there is none,
the fit trains without ghost cells and prediction leaves them out."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import dustgp
from dustgp.fitting.foreground import MIN_STARS, check_foreground
from fitting_skies import NEWTON_TRAIN, SMALL_NEWTON, clump_sky

BACKGROUND = 1.6e-3  # mag/pc, the simulator's default (the paper's Section 3)


def check(catalog, grid=NEWTON_TRAIN, extinction=None):
    a = catalog.extinction if extinction is None else extinction
    return check_foreground(grid, catalog.distance, a, catalog.extinction_err)


def test_an_empty_foreground_is_found_empty() -> None:
    found = check(clump_sky(False).catalog)
    assert found is not None
    assert found.empty
    assert abs(found.extinction) < 4.0 * found.extinction_err + 1e-6  # none, within its error


def test_a_dusty_foreground_is_measured_and_kept() -> None:
    # the background fills 0 .. d_min too: BACKGROUND × 150 pc = 0.24 mag in front of d_min
    found = check(clump_sky(True).catalog)
    assert found is not None
    assert not found.empty
    assert found.extinction == pytest.approx(BACKGROUND * NEWTON_TRAIN.d_min, abs=4.0 * found.extinction_err)


def test_outliers_do_not_empty_a_foreground_or_fill_an_empty_one() -> None:
    rng = np.random.default_rng(0)
    for foreground in (False, True):
        catalog = clump_sky(foreground).catalog
        a = np.array(catalog.extinction)
        bad = rng.random(a.size) < 0.05
        a[bad] += rng.uniform(0.3, 1.5, bad.sum())  # 5% of stars 0.3-1.5 mag too high
        found = check(catalog, extinction=a)
        assert found.empty is not foreground


def test_noisy_stars_do_not_decide_for_an_empty_foreground() -> None:
    # with a 0.05 mag error floor the stars cannot tell no foreground from a few millimag: the ghost cells stay
    found = check(clump_sky(False, noise_floor=0.05).catalog)
    assert found is not None
    assert not found.empty


def test_no_check_without_ghost_cells_or_stars() -> None:
    catalog = clump_sky(False).catalog
    assert check(catalog, NEWTON_TRAIN.with_ghost_cells(0)) is None
    near = np.argsort(catalog.distance)[: MIN_STARS - 1]
    far = catalog.distance > 250.0
    keep = np.union1d(np.flatnonzero(far), near[catalog.distance[near] >= NEWTON_TRAIN.d_min])
    columns = (catalog.distance, catalog.extinction, catalog.extinction_err)
    assert check_foreground(NEWTON_TRAIN, *(c[keep] for c in columns)) is None


def test_a_fit_leaves_out_an_empty_foreground_and_says_so(caplog) -> None:
    stiff = clump_sky(False)  # sigma_A = 10% of A with no floor: stars just behind d_min quote ~1e-4 mag
    grid = NEWTON_TRAIN
    with caplog.at_level(logging.INFO, logger="dustgp"):
        result = dustgp.fit(stiff.catalog, grid, progress=False, max_iterations=3, stop="none", **SMALL_NEWTON)
    assert result.grid == grid.with_ghost_cells(0)
    assert result.foreground["empty"]
    assert "foreground empty" in result.summary()
    assert any("training without the grid's 1 ghost cells" in r.getMessage() for r in caplog.records)
    with caplog.at_level(logging.WARNING, logger="dustgp"):
        dmap = result.predict(grid.refined(2), samples=10, progress=False)
    assert dmap.grid.ghost_cells == 0  # no dust extrapolated in front of d_min
    assert any("ghost cells are left out" in r.getMessage() for r in caplog.records)
    kept = dustgp.fit(
        stiff.catalog, grid, progress=False, max_iterations=1, stop="none", foreground="ghost", **SMALL_NEWTON
    )
    assert kept.grid == grid
    assert kept.foreground == {}


def test_foreground_option_is_checked() -> None:
    with pytest.raises(ValueError, match="foreground: expected one of"):
        dustgp.FitConfig(foreground="none")
