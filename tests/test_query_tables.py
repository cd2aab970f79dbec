"""Whole tables and planes: query_table adds answer columns in units and names what is wrong; extinction_plane."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table

from dustgp.grid import Grid
from dustgp.posterior_map import PosteriorMap
from dustgp.query.dustmap_query import QueryError
from dustgp.query.tables import extinction_plane, query_table
from known_maps import make_map


@pytest.fixture
def uniform() -> PosteriorMap:
    """1.3e-3 mag/pc in every cell, nine samples (the ``uniform`` map of test_query_dustmap_query)."""
    return make_map(Grid(l=(50, 90, 8), b=(-10, 10, 6), d=(180, 500, 16), ghost_cells=2), 1.3e-3, n_samples=9)


def test_extinction_plane_at_d_max_is_total_extinction(uniform: PosteriorMap) -> None:
    np.testing.assert_array_equal(extinction_plane(uniform), uniform.extinction_mean[-1])
    with pytest.raises(QueryError, match="distance"):
        extinction_plane(uniform, 600 * u.pc)


# ----- tables in, tables out (the friendly layer behind `dustgp query --table`) -------------------------------
def test_query_table_adds_answer_columns_in_units(uniform: PosteriorMap) -> None:
    # distances in kpc are converted; bare l and b are deg; A = 1.3e-3 mag/pc x d
    stars = Table({"glon": [60.0, 60.0, 95.0], "glat": [0.0, 1.0, 0.0], "distance": [0.3, 0.2, 0.3]})
    stars["distance"].unit = u.kpc
    out = query_table(uniform, stars)
    assert out.colnames == ["glon", "glat", "distance", "A_mean", "in_map", "reliable_dist"]
    np.testing.assert_allclose(out["A_mean"].quantity[:2].to_value(u.mag), [0.39, 0.26], rtol=1e-12)
    assert np.isnan(out["A_mean"][2])
    assert list(out["in_map"]) == [True, True, False]
    assert "A_mean" not in stars.colnames  # the input is not changed
    levels = query_table(uniform, stars, mode="percentile", pct=[16, 84])
    np.testing.assert_allclose(levels["A_p16"][0], 0.66 * 0.39, rtol=1e-12)  # known_maps' percentile factors
    np.testing.assert_allclose(levels["A_p84"][0], 1.34 * 0.39, rtol=1e-12)
    samples = query_table(uniform, stars, mode="samples")
    assert samples["A_samples"].shape == (3, uniform.n_samples)
    density = query_table(uniform, stars, integrated=False)
    assert density["rho_mean"].unit == u.mag / u.pc
    np.testing.assert_allclose(density["rho_mean"][0], 1.3e-3, rtol=1e-12)


def test_query_table_names_what_is_wrong(uniform: PosteriorMap) -> None:
    with pytest.raises(QueryError, match="expected a column 'd' or 'distance' or 'dist' for d"):
        query_table(uniform, Table({"l": [60.0], "b": [0.0], "r": [300.0]}))
    wrong = Table({"l": [60.0], "b": [0.0], "d": [300.0]})
    wrong["d"].unit = u.s
    with pytest.raises(QueryError, match="column 'd': expected a unit convertible to pc, got s"):
        query_table(uniform, wrong)
    with pytest.raises(QueryError, match="already has column 'A_mean'"):
        query_table(uniform, Table({"l": [60.0], "b": [0.0], "d": [300.0], "A_mean": [1.0]}))
