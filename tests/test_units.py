"""dustgp._units: one rule for bare numbers across the public API (issue 12, after the catalogue's of issue 11).

A Quantity is converted whatever its unit; a bare number gets the documented unit (pc; kpc for ``query_gal``) and a
warning when all the numbers given look like the other unit.
"""

from __future__ import annotations

import logging

import astropy.units as u
import matplotlib
import numpy as np
import pytest

from dustgp import plot
from dustgp._units import KPC_WARNING_BELOW, degrees, distance_pc
from dustgp.grid import Grid
from dustgp.mass import dust_mass
from dustgp.query.tables import extinction_plane
from known_maps import make_map

matplotlib.use("Agg")


def test_quantities_are_converted_and_bare_numbers_take_the_documented_unit() -> None:
    np.testing.assert_allclose(distance_pc(0.3 * u.kpc, "x"), 300.0)
    np.testing.assert_allclose(distance_pc([100.0, 200.0], "x"), [100.0, 200.0])
    np.testing.assert_allclose(distance_pc(0.3, "x", bare_unit=u.kpc), 300.0)
    np.testing.assert_allclose(degrees(np.pi * u.rad), 180.0)
    np.testing.assert_allclose(degrees([10.0, 20.0]), [10.0, 20.0])


@pytest.mark.parametrize(
    ("values", "bare_unit", "warned"),
    [
        ([0.2, 0.5], u.pc, True),  # all below 30 pc: kpc?
        ([0.2, 500.0], u.pc, False),  # mixed: no guess
        ([KPC_WARNING_BELOW], u.pc, False),
        ([300.0, 500.0], u.kpc, True),  # 300 kpc: pc?
        ([0.3, 50.0], u.kpc, False),
        ([np.nan, -1.0], u.pc, False),  # nothing positive and finite to judge
    ],
)
def test_look_alike_units_are_warned(values, bare_unit, warned: bool, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dustgp"):
        distance_pc(values, "where", bare_unit=bare_unit)
    assert bool(caplog.records) == warned
    if warned:
        assert caplog.records[0].getMessage().startswith("where: bare distances are")


@pytest.fixture(scope="module")
def uniform():
    return make_map(Grid(l=(50, 90, 8), b=(-10, 10, 6), d=(180, 500, 16), ghost_cells=2), 1.3e-3)


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("extinction_plane", lambda m, d: extinction_plane(m, d)),
        ("dust_mass", lambda m, d: dust_mass(m, distance=d).median),
        ("density_slice", lambda m, d: plot.density_slice(m, d).get_array()),
        ("extinction_map", lambda m, d: plot.extinction_map(m, d).get_array()),
    ],
)
def test_every_public_distance_follows_the_rule(name: str, call, uniform, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dustgp"):
        bare, quantity = call(uniform, 300.0), call(uniform, 0.3 * u.kpc)
    assert not caplog.records
    np.testing.assert_allclose(np.asarray(bare), np.asarray(quantity))
    with caplog.at_level(logging.WARNING, logger="dustgp"):
        call(uniform, 0.3)  # 0.3 pc: inside the ghost cells, allowed, but it looks like kpc: said once, by name
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [name]
    assert "look like kpc" in caplog.records[0].getMessage()
