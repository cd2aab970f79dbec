"""The paper's Section 3 experiment at full size with the default fitting method (slow: ~6 min on 2 cores)."""

import numpy as np
import pytest

import dustgp
from dustgp.validation import compare_to_truth

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def accuracy():
    sky = dustgp.paper_experiment(n_stars=120_000, seed=0)
    train = dustgp.Grid(l=(50, 90, 20), b=(-10, 10, 20), d=(180, 500, 35), ghost_cells=2)
    # the paper's likelihood, as in `dustgp demo`: Gaussian noise of 10% of A, no outliers, no error floor
    fit = dustgp.fit(
        sky.catalog, train, inducing_points=1000, length_scale=20.0, seed=1, progress=False,
        likelihood="gaussian", error_floor=0.0,
    )  # fmt: skip
    assert fit.converged
    # as `dustgp demo` does (for the default method, the conditional covariance the model was trained with)
    grid = dustgp.Grid(l=(50, 90, 100), b=(-10, 10, 100), d=(180, 500, 105))
    dmap = fit.predict(grid, samples=200, cell_variance=True, progress=False)
    return compare_to_truth(dmap, sky)


def test_density_matches_the_truth(accuracy) -> None:
    # the paper reports ~12% typical and ~20% maximal residuals; the issue asks for 5% median and 15% at q90
    assert accuracy.median_relative_error <= 0.05
    assert accuracy.p90_relative_error <= 0.15


def test_few_stars_are_underestimated(accuracy) -> None:
    # paper Sect. 3: fewer than 10% of the sources are underestimated
    assert accuracy.underestimated_fraction < 0.10
    assert np.isfinite(accuracy.extinction_median_residual)


def test_band_means_what_it_says(accuracy) -> None:
    # a 16-84% band holds the truth in 68% of cells if calibrated; 14,800 cells of smooth truth are far from
    # independent, so the band is judged at the inference issue's 60-75% (fit seeds 1-3 gave 68.2-69.3%)
    assert 0.60 <= accuracy.coverage_16_84 <= 0.75
