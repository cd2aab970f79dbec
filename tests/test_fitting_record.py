"""dustgp.fitting.record: the Fit record, and maps predicted from it."""

import copy
import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from dustgp.fitting.record import WIDE_PRIOR
from dustgp.grid import Grid
from fitting_skies import TRAIN, svi_fit, svi_sky


@pytest.fixture(scope="module")
def sky():
    return svi_sky()


@pytest.fixture(scope="module")
def fitted():
    return svi_fit()


@pytest.mark.parametrize(
    ("d", "asked", "expected"),
    [
        ((180, 500, 10), 0, 2),  # same d_min: the trained layout
        ((180, 500, 10), 1, 2),  # one 0-180 pc cell would evaluate the density between the trained centres
        ((180, 500, 10), 5, 5),  # finer than trained: kept
        ((360, 500, 5), 1, 40),  # in front of 360 pc lie trained cells 320/35 pc wide
        ((60, 500, 10), 1, 1),  # inside the first trained ghost cell
    ],
)
def test_prediction_foreground_is_as_fine_as_the_trained_one(d, asked, expected) -> None:
    from dustgp.prediction import _default_grid

    trained = Grid(l=(50, 90, 20), b=(-10, 10, 20), d=(180, 500, 35), ghost_cells=2)
    grid = _default_grid(SimpleNamespace(grid=trained), Grid(l=(50, 90, 8), b=(-10, 10, 8), d=d, ghost_cells=asked))
    assert grid.ghost_cells == expected
    assert grid.d_min == d[0]
    if expected == trained.ghost_cells:
        np.testing.assert_array_equal(grid.d_edges[:3], trained.d_edges[:3])  # the trained ghost cells exactly


def test_prediction_reproduces_the_trained_foreground(fitted) -> None:
    # A grid asked for without ghost cells gets the trained ones: the extinction at d_min is that of training.
    plain = fitted.predict(TRAIN, samples=20, progress=False)
    without = fitted.predict(TRAIN.with_ghost_cells(0), samples=20, progress=False)
    assert without.grid.ghost_cells == TRAIN.ghost_cells
    np.testing.assert_allclose(without.extinction_mean, plain.extinction_mean, rtol=1e-6)


def test_a_prior_wider_than_any_turbulent_gas_is_warned_about(fitted) -> None:
    assert fitted.hyperparameters()["scale_dex2"] < WIDE_PRIOR
    assert fitted.prior_warning is None
    wide = copy.deepcopy(fitted)
    wide.model.covar_module.outputscale = 9.0  # dex²: 3 dex at 1 sigma
    assert "3 dex at 1 sigma" in wide.prior_warning
    assert "WARNING: " + wide.prior_warning in wide.summary()
    # a prior the user fixed is the user's choice, not something the fit learned
    wide.config = dataclasses.replace(wide.config, learn_hyperparameters=False)
    assert wide.prior_warning is None
