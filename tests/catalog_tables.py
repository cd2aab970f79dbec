"""Catalogue tables for the tests of dustgp.catalog: a small table in the default column names, and a check that a
catalogue holds its stars."""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.table import Table

from dustgp.catalog import Catalog

#: The seed of the catalogue tests' ``rng`` fixtures.
SEED = 20220131


def make_table(rng: np.random.Generator, n: int = 50, *, units: bool = True) -> Table:
    """A small catalogue table in the default column names, with units unless ``units`` is False."""
    table = Table()
    table["l"] = rng.uniform(0.0, 360.0, n)
    table["b"] = rng.uniform(-30.0, 30.0, n)
    table["distance"] = rng.uniform(100.0, 1000.0, n)
    table["distance_err"] = 0.1 * table["distance"]
    table["A0"] = rng.uniform(-0.1, 3.0, n)
    table["A0_err"] = rng.uniform(0.02, 0.2, n)
    if units:
        for name, unit in [("l", u.deg), ("b", u.deg), ("distance", u.pc), ("distance_err", u.pc)]:
            table[name].unit = unit
        table["A0"].unit = u.mag
        table["A0_err"].unit = u.mag
    return table


def assert_same_stars(catalog: Catalog, table: Table) -> None:
    np.testing.assert_allclose(catalog.l, table["l"], rtol=1e-12)
    np.testing.assert_allclose(catalog.b, table["b"], rtol=1e-12)
    np.testing.assert_allclose(catalog.distance, table["distance"], rtol=1e-12)
    np.testing.assert_allclose(catalog.extinction, table["A0"], rtol=1e-12)
    np.testing.assert_allclose(catalog.extinction_err_observed, table["A0_err"], rtol=1e-12)
