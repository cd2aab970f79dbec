"""Figures: each function returns what it drew, longitude increases to the left, PNGs can be written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: the tests never need a display

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D

from dustgp import plot
from dustgp.emission import emission_ratio
from dustgp.grid import Grid
from dustgp.posterior_map import PosteriorMap
from known_maps import make_map as known_map


def make_map(grid: Grid, *, n_samples: int = 4, seed: int = 0) -> PosteriorMap:
    rho = np.random.default_rng(seed).lognormal(-7, 1, grid.shape)
    return known_map(grid, rho, n_samples=n_samples, seed=seed)


GRIDS = {
    "plain": Grid(l=(50, 90, 8), b=(-10, 10, 6), d=(180, 500, 10), ghost_cells=2),
    "crossing_l0": Grid(l=(350, 10, 10), b=(-5, 5, 4), d=(100, 300, 5), ghost_cells=1),
}


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    plt.close("all")


@pytest.fixture(params=list(GRIDS), ids=list(GRIDS))
def dmap(request: pytest.FixtureRequest) -> PosteriorMap:
    return make_map(GRIDS[request.param])


def assert_l_increases_to_the_left(image: AxesImage, grid: Grid) -> None:
    ax = image.axes
    if hasattr(ax, "wcs"):
        # world longitude of the left and right image columns (in pixel space: x from 0 to n_l - 1)
        l_left, _ = ax.wcs.pixel_to_world_values(0, 0)
        l_right, _ = ax.wcs.pixel_to_world_values(grid.n_l - 1, 0)
        assert grid.unwrap_l(l_left) > grid.unwrap_l(l_right)
        x0, x1 = ax.get_xlim()
        assert x0 < x1  # pixel axis runs left to right; the WCS reverses longitude
    else:
        x0, x1 = ax.get_xlim()
        assert x0 > x1


def test_density_slice(dmap: PosteriorMap, tmp_path: Path) -> None:
    image = plot.density_slice(dmap, 250.0)
    assert isinstance(image, AxesImage)
    assert_l_increases_to_the_left(image, dmap.grid)
    # the image shows the cell holding 250 pc, l reversed
    i_d = np.searchsorted(dmap.grid.d_edges, 250.0) - 1
    np.testing.assert_array_equal(image.get_array(), dmap.density(50.0).value[i_d][:, ::-1])
    image.figure.savefig(tmp_path / "slice.png")
    assert (tmp_path / "slice.png").stat().st_size > 0


def test_plain_axes_put_longitude_increasing_left(dmap: PosteriorMap) -> None:
    _, ax = plt.subplots()
    image = plot.density_slice(dmap, 250.0, q=None, ax=ax, colorbar=False)
    assert image.axes is ax
    assert_l_increases_to_the_left(image, dmap.grid)
    left, right, _, _ = image.get_extent()
    assert left > right
    image = plot.extinction_map(dmap, ax=plt.subplots()[1])
    assert_l_increases_to_the_left(image, dmap.grid)


def test_extinction_map(dmap: PosteriorMap, tmp_path: Path) -> None:
    image = plot.extinction_map(dmap, 200.0, mode="mean")
    assert isinstance(image, AxesImage)
    assert_l_increases_to_the_left(image, dmap.grid)
    image.figure.savefig(tmp_path / "ext.png")


def test_sightline_profile(dmap: PosteriorMap, tmp_path: Path) -> None:
    grid = dmap.grid
    drawn = plot.sightline_profile(dmap, grid.l_centers[1], grid.b_centers[1])
    assert isinstance(drawn.density, Line2D)
    assert isinstance(drawn.extinction, Line2D)
    assert drawn.density_band is not None
    assert drawn.extinction_band is not None
    np.testing.assert_array_equal(drawn.extinction.get_ydata()[1:], dmap.extinction_mean[:, 1, 1])
    drawn.density.figure.savefig(tmp_path / "profile.png")
    with pytest.raises(ValueError, match="outside"):
        plot.sightline_profile(dmap, 180.0, 0.0)


def test_sightline_title_rounds_its_coordinates() -> None:
    grid = Grid(l=(50, 90, 8), b=(-10, 10, 100), d=(180, 500, 5), ghost_cells=1)
    b_middle = float(np.median(grid.b_centers))  # 4.44e-16 deg: the rounding noise of computed centres
    drawn = plot.sightline_profile(make_map(grid), 70.0, b_middle)
    assert drawn.density.axes.get_title() == "l = 70°, b = 0°"
    assert plot.format_degrees(-1e-17) == "0"
    assert plot.format_degrees(123.4567891) == "123.457"


def test_residual_histogram(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a_pred = rng.uniform(0.1, 2, 2000)
    sigma = 0.1 * a_pred
    drawn = plot.residual_histogram(a_pred + sigma * rng.standard_normal(2000), a_pred, sigma)
    assert len(drawn.histogram.patches) == 60
    assert isinstance(drawn.gaussian, Line2D)
    # the unit Gaussian's peak
    assert drawn.gaussian.get_ydata().max() == pytest.approx(1 / np.sqrt(2 * np.pi), rel=1e-3)
    drawn.gaussian.figure.savefig(tmp_path / "residuals.png")


def test_elbo_history(tmp_path: Path) -> None:
    line = plot.elbo_history(1e5 * np.exp(-np.arange(300) / 50) + 1e3)
    assert isinstance(line, Line2D)
    assert line.axes.get_yscale() == "log"
    assert plot.elbo_history([-3.0, -2.0, 1.0]).axes.get_yscale() == "linear"
    line.figure.savefig(tmp_path / "elbo.png")


def test_emission_ratio_map(dmap: PosteriorMap, tmp_path: Path) -> None:
    grid = dmap.grid
    # a flat emission map: the ratio map is the extinction map over its median
    result = emission_ratio(dmap, (np.ones(12 * 16**2), "ring"))
    drawn = plot.emission_ratio_map(result, dmap)
    assert isinstance(drawn.image, AxesImage)
    assert drawn.contours is not None
    assert_l_increases_to_the_left(drawn.image, grid)
    drawn.image.figure.savefig(tmp_path / "ratio.png")
    plain = plot.emission_ratio_map(result, dmap, ax=plt.subplots()[1])
    assert_l_increases_to_the_left(plain.image, grid)


def test_truth_comparison(tmp_path: Path) -> None:
    grid = GRIDS["plain"]
    dmap = make_map(grid)
    fig = plot.truth_comparison(dmap, dmap.density_mean * 1.1, [200.0, 400.0])
    assert len([ax for ax in fig.axes if hasattr(ax, "wcs")]) == 6
    fig.savefig(tmp_path / "truth.png")
    fig = plot.truth_comparison(dmap, lambda l, b, d: np.full(np.shape(d), 1e-3), [300.0])
    assert len([ax for ax in fig.axes if hasattr(ax, "wcs")]) == 3
    with pytest.raises(ValueError, match="shape"):
        plot.truth_comparison(dmap, np.ones((2, 2, 2)), [300.0])
