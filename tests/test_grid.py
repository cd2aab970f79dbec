"""Grid specifications: what a valid spec builds, and that every invalid one is refused naming its axis."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from dustgp.grid import Grid, GridError

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
