"""DustgpQuery: a dustgp map as a dustmaps map (a subclass of dustmaps.map_base.DustMap), from a map or a file."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from dustgp.grid import Grid
from dustgp.posterior_map import PosteriorMap
from known_maps import make_map


@pytest.fixture
def uniform() -> PosteriorMap:
    """1.3e-3 mag/pc in every cell, nine samples (the ``uniform`` map of test_query_dustmap_query)."""
    return make_map(Grid(l=(50, 90, 8), b=(-10, 10, 6), d=(180, 500, 16), ghost_cells=2), 1.3e-3, n_samples=9)


def galactic(l, b, d_pc) -> SkyCoord:
    return SkyCoord(
        l=np.asarray(l) * u.deg, b=np.asarray(b) * u.deg, distance=np.asarray(d_pc) * u.pc, frame="galactic"
    )


def test_dustmaps_subclass(uniform: PosteriorMap, tmp_path) -> None:
    map_base = pytest.importorskip("dustmaps.map_base")
    from dustgp.io import write_netcdf
    from dustgp.query import DustgpQuery

    q = DustgpQuery(uniform)
    assert isinstance(q, map_base.DustMap)
    c = galactic(np.full((2, 3), 60.0), np.zeros((2, 3)), np.full((2, 3), 300.0))
    np.testing.assert_allclose(q(c), np.full((2, 3), 0.39), rtol=1e-12)
    assert q(c, mode="samples").shape == (2, 3, 9)
    assert q(c, mode="percentile", pct=[16, 84]).shape == (2, 3, 2)
    assert np.ndim(q(galactic(60.0, 0.0, 300.0))) == 0
    assert q.query_gal(60.0, 0.0, 0.3) == pytest.approx(0.39, rel=1e-12)
    values, flags = q(c, return_flags=True)
    assert values.shape == flags.shape == (2, 3)
    np.testing.assert_array_equal(q.distance_bounds.value, uniform.grid.d_edges)
    path = write_netcdf(uniform, tmp_path / "map.nc")
    np.testing.assert_array_equal(DustgpQuery(path)(c), q(c))
