"""Grids: what a valid spec builds, that every invalid one is refused naming its axis, and the geometry."""

from __future__ import annotations

import logging

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from dustgp.grid import Grid, GridError, lbd_to_xyz, wrap_longitude

B = (-5, 5, 4)
D = (100, 300, 5)


def test_tuple_spec_gives_uniform_cells() -> None:
    grid = Grid(l=(50, 90, 20), b=(-10, 10, 20), d=(180, 500, 35), ghost_cells=2)
    assert grid.shape == (37, 20, 20)
    np.testing.assert_allclose(grid.l_edges, np.linspace(50, 90, 21))
    np.testing.assert_allclose(grid.d_edges[2:], np.linspace(180, 500, 36))
    assert Grid(l=(50, 90, np.int64(20)), b=B, d=D).n_l == 20  # numpy integers are counts too


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        # a float count must not be read as three edges (l = 10..366 deg in two cells)
        ({"l": (10, 20, 6.0)}, r"l: expected \(lo, hi, n\) with n an integer number of cells, got n=6\.0 \(float\)"),
        ({"b": (-5, 5, 4.5)}, r"b: expected \(lo, hi, n\) with n an integer .* got n=4\.5"),
        ({"d": (100, 300, True)}, r"d: expected \(lo, hi, n\) with n an integer .* got n=True \(bool\)"),
        ({"d": (100, 300, 0)}, r"d: expected at least 1 cell, got n=0"),
        ({"l": ("10", 20, 6)}, r"l: expected \(lo, hi, n\) with lo a number in deg, got '10'"),
        ({"d": (100, np.inf, 5)}, r"d: expected finite bounds in pc, got hi=inf"),
        ({"b": (np.nan, 5, 4)}, r"b: expected finite bounds in deg, got lo=nan"),
        ({"d": (300, 100, 5)}, r"d: expected lo < hi, got \(300, 100\) pc"),
        ({"b": (5, -5, 4)}, r"b: expected lo < hi"),
        ({"d": (-10, 300, 5)}, r"d: distances must be >= 0 pc, got d_min=-10"),
        ({"d": (0, 300, 5)}, r"d: ghost cells need d_min > 0 pc"),
        ({"b": (-95, 5, 4)}, r"b: expected edges within \[-90, 90\] deg"),
        # a decreasing list of three is no wrap through 360 deg (20 -> 6 would be a cell of 346 deg)
        ({"l": [10, 20, 6]}, r"l: edges must increase strictly .* write a tuple \(10, 20, 6\)"),
        ({"d": [180, 500, 35]}, r"d: edges must increase strictly, got .* write a tuple \(180, 500, 35\)"),
        ({"d": [100, np.inf, 400]}, r"d: expected finite edges in pc"),
        ({"d": ["100", "200"]}, r"d: expected a \(lo, hi, n\) tuple or a 1-D list of at least two edges"),
        ({"d": [100]}, r"d: expected a \(lo, hi, n\) tuple or a 1-D list of at least two edges"),
        ({"ghost_cells": 2.0}, r"ghost_cells: expected an integer >= 0, got 2\.0 \(float\)"),
        ({"ghost_cells": True}, r"ghost_cells: expected an integer >= 0, got True \(bool\)"),
        ({"ghost_cells": -1}, r"ghost_cells: expected an integer >= 0, got -1"),
    ],
)
def test_invalid_specs_name_the_axis(axes: dict, message: str) -> None:
    spec = {"l": (50, 90, 8), "b": B, "d": D, "ghost_cells": 1} | axes
    with pytest.raises(GridError, match=message):
        Grid(**spec)


def test_longitude_may_cross_360_once() -> None:
    assert Grid(l=(350, 10, 4), b=B, d=D).l_edges.tolist() == [350, 355, 360, 365, 370]
    assert Grid(l=[350, 355, 0, 5], b=B, d=D).l_edges.tolist() == [350, 355, 360, 365]
    with pytest.raises(GridError, match=r"l: edges must increase strictly.* write a tuple \(0, 360, 36\)"):
        Grid(l=[0, 360, 36], b=B, d=D)
    with pytest.raises(GridError, match="wider than 360"):
        Grid(l=[0, 180, 300, 90], b=B, d=D)


def test_a_list_of_three_integers_is_edges_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dustgp.grid"):
        grid = Grid(l=(50, 90, 8), b=[-10, 10, 20], d=D)
    assert grid.b_edges.tolist() == [-10, 10, 20]
    assert "b: the list [-10, 10, 20] is read as 3 cell edges (2 cells); for (lo, hi, n)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dustgp.grid"):
        Grid(l=(50, 90, 8), b=np.array([-10, 10, 20]), d=D)  # an array is unambiguous
    assert caplog.text == ""


def test_from_dict_checks_counts_and_round_trips() -> None:
    grid = Grid.from_dict({"l": [50, 90, 8], "b": [-5, 5, 4], "d": [100, 300, 5], "ghost_cells": 2})
    assert grid.shape == (7, 4, 8)
    two_cells = Grid(l=np.array([10.0, 11.0, 13.0]), b=B, d=D)
    assert Grid.from_dict(two_cells.to_dict()) == two_cells  # three edges stored as a list stay edges
    with pytest.raises(GridError, match=r"l: expected \(lo, hi, n\) with n an integer .* got n=8\.0"):
        Grid.from_dict({"l": [50, 90, 8.0], "b": [-5, 5, 4], "d": [100, 300, 5]})
    with pytest.raises(GridError, match=r"ghost_cells: expected an integer >= 0, got '2'"):
        Grid.from_dict({"l": [50, 90, 8], "b": [-5, 5, 4], "d": [100, 300, 5], "ghost_cells": "2"})
    with pytest.raises(GridError, match=r"d: expected \[lo, hi, n\] or a list of edges, got 5"):
        Grid.from_dict({"l": [50, 90, 8], "b": [-5, 5, 4], "d": 5})
    with pytest.raises(GridError, match=r"missing entries \['d'\]"):
        Grid.from_dict({"l": [50, 90, 8], "b": [-5, 5, 4]})


# ----- geometry ------------------------------------------------------------------------------------------------


def test_lbd_to_xyz_agrees_with_astropy(rng: np.random.Generator) -> None:
    # astropy's Galactic frame as the oracle: x towards l = 0, y towards l = 90 deg, z towards b = 90 deg
    l = rng.uniform(-180.0, 540.0, 500)  # longitudes outside [0, 360) too
    b = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, 500)))
    d = rng.uniform(1.0, 5000.0, 500)
    expected = SkyCoord(l=l * u.deg, b=b * u.deg, distance=d * u.pc, frame="galactic").cartesian.xyz.to_value(u.pc)
    # both are a few float64 operations on the same inputs: agreement to ~1e-13 of the distance
    np.testing.assert_allclose(lbd_to_xyz(l, b, d), expected.T, rtol=0, atol=1e-12 * d.max())


def test_cell_centres_and_lengths() -> None:
    grid = Grid(l=(50, 90, 4), b=(-10, 10, 2), d=(100, 300, 4), ghost_cells=2)
    np.testing.assert_allclose(grid.l_centers, [55, 65, 75, 85])
    np.testing.assert_allclose(grid.b_centers, [-5, 5])
    # two ghost cells split 0 .. d_min evenly, then four 50 pc region cells
    np.testing.assert_allclose(grid.d_edges, [0, 50, 100, 150, 200, 250, 300])
    np.testing.assert_allclose(grid.path_lengths, 50.0)
    assert (grid.d_min, grid.d_max, grid.shape, grid.n_cells) == (100.0, 300.0, (6, 2, 4), 48)
    xyz = grid.cell_centers_xyz()
    d = grid.cell_centers_lbd()[2]
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), d.ravel())  # centres lie at their distance


def test_solid_angles_sum_to_the_box() -> None:
    # the whole sky in 8 x 6 pixels is 4 pi sr; a band |b| < 30 deg is 4 pi sin(30 deg) = 2 pi sr
    assert Grid(l=(0, 360, 8), b=(-90, 90, 6), d=D).solid_angles().sum() == pytest.approx(4 * np.pi, rel=1e-12)
    assert Grid(l=(0, 360, 8), b=(-30, 30, 6), d=D).solid_angles().sum() == pytest.approx(2 * np.pi, rel=1e-12)


def test_cell_volumes_sum_to_the_shell() -> None:
    # the whole sky between 100 and 200 pc is 4 pi (200³ - 100³) / 3 pc³, whatever the pixels
    volumes = Grid(l=(0, 360, 8), b=(-90, 90, 6), d=(100, 200, 5), ghost_cells=0).cell_volumes()
    assert volumes.shape == (5, 6, 8)
    assert volumes.sum() == pytest.approx(4 * np.pi * (200.0**3 - 100.0**3) / 3, rel=1e-12)
    # shells of equal depth: the outermost holds (200³ - 180³) / (120³ - 100³) times the innermost's volume
    assert volumes[-1].sum() / volumes[0].sum() == pytest.approx((200**3 - 180**3) / (120**3 - 100**3), rel=1e-12)


def test_locate_finds_cells_edges_and_misses() -> None:
    grid = Grid(l=(350, 370, 4), b=(-10, 10, 2), d=(100, 300, 4), ghost_cells=1)  # crosses l = 360
    i_d, i_b, i_l = grid.locate(
        np.array([351.0, 2.0, 10.0, 349.9, 355.0, 355.0, 355.0, np.nan]),
        np.array([0.0, -10.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
        np.array([120.0, 300.0, 50.0, 120.0, 300.1, 0.0, 150.0, 120.0]),
    )
    # l = 2 deg is 362 on this grid (cell 2); l = 10 is the far edge, which belongs to the last cell
    np.testing.assert_array_equal(i_l, [0, 2, 3, -1, -1, 1, 1, -1])
    np.testing.assert_array_equal(i_b, [1, 0, 1, -1, -1, 1, 1, -1])
    # d = 50 pc and d = 0 are in the ghost cell (index 0); 300 pc is the far edge; beyond it is off the grid
    np.testing.assert_array_equal(i_d, [1, 4, 0, -1, -1, 0, 2, -1])


def test_refined_keeps_bounds_and_multiplies_cells() -> None:
    grid = Grid(l=(50, 90, 4), b=(-10, 10, 2), d=(100, 300, 4), ghost_cells=2)
    fine = grid.refined(2.5)
    assert fine.shape[1:] == (5, 10)
    assert fine.n_d - fine.ghost_cells == 10
    for axis in ("l_edges", "b_edges"):
        assert getattr(fine, axis)[[0, -1]].tolist() == getattr(grid, axis)[[0, -1]].tolist()
    assert (fine.d_min, fine.d_max) == (grid.d_min, grid.d_max)


def test_distance_cell_picks_the_holding_cell_or_the_nearest() -> None:
    grid = Grid(l=(50, 90, 4), b=(-10, 10, 2), d=(100, 300, 4), ghost_cells=2)  # d edges 0, 50, 100, 150, ...
    assert [grid.distance_cell(d) for d in (0.0, 49.9, 50.0, 120.0, 300.0)] == [0, 0, 1, 2, grid.n_d - 1]
    assert grid.distance_cell(-5.0) == 0  # in front of the map: the first cell
    assert grid.distance_cell(1e6) == grid.n_d - 1  # beyond it: the last
    # inside the grid it agrees with locate
    d = np.linspace(1.0, 299.0, 50)
    i_d, _, _ = grid.locate(np.full(50, 60.0), np.zeros(50), d)
    assert [grid.distance_cell(x) for x in d] == i_d.tolist()


@pytest.mark.parametrize("start", [-180.0, 0.0, 179.5, 350.0])
def test_wrap_longitude_lands_in_one_turn_from_start(start: float) -> None:
    l = np.array([-720.0, -1.0, 0.0, start, start + 359.999, start + 360.0, 725.25])
    wrapped = wrap_longitude(l, start)
    assert np.all((wrapped >= start) & (wrapped < start + 360.0))
    turns = (wrapped - l) / 360.0
    np.testing.assert_allclose(turns, np.round(turns), atol=1e-12)  # moved by whole turns only
    assert wrap_longitude(start + 360.0, start) == start  # the turn is half-open
