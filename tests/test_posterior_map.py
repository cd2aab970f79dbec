"""dustgp.posterior_map: the map record's checks, summaries, samples and the registry of its file and query hooks."""

from __future__ import annotations

import numpy as np
import pytest

from dustgp import posterior_map
from dustgp.grid import Grid
from dustgp.posterior_map import SUMMARIES, PosteriorMap, keep_samples_for, register_product
from known_maps import make_map

GRID = Grid(l=(50, 90, 4), b=(-10, 10, 3), d=(180, 500, 5), ghost_cells=2)


def test_every_summary_is_checked_by_name() -> None:
    dmap = make_map(GRID, 1e-3, n_samples=3)
    fields = {s.name: getattr(dmap, s.name) for s in SUMMARIES}
    for summary in SUMMARIES:
        wrong = dict(fields, **{summary.name: fields[summary.name][..., :-1]})  # one longitude short
        with pytest.raises(ValueError, match=f"^{summary.name}: expected shape"):
            PosteriorMap(grid=GRID, percentiles=dmap.percentiles, **wrong)
    with pytest.raises(ValueError, match=r"^coverage: expected shape"):
        PosteriorMap(grid=GRID, percentiles=dmap.percentiles, coverage=np.ones((1, 2, 3), bool), **fields)
    with pytest.raises(ValueError, match=r"^reliable_distance: expected shape"):
        PosteriorMap(grid=GRID, percentiles=dmap.percentiles, reliable_distance=np.ones((2, 3)), **fields)


def test_region_slice_leaves_out_the_ghost_cells() -> None:
    dmap = make_map(GRID, 1e-3)
    assert dmap.density_mean[dmap.region_slice].shape[0] == GRID.n_d - GRID.ghost_cells == 5


def test_extinction_samples_integrate_the_density_samples() -> None:
    dmap = make_map(GRID, 1e-3, n_samples=4)
    expected = np.cumsum(dmap.density_samples * GRID.path_lengths[None, :, None, None], axis=1)
    np.testing.assert_allclose(dmap.extinction_samples(), expected)
    assert dmap.n_samples == 4
    with pytest.raises(ValueError, match="keeps no posterior samples"):
        make_map(GRID, 1e-3).extinction_samples()


def test_unstored_percentiles_come_from_samples_or_are_refused() -> None:
    with_samples, without = make_map(GRID, 1e-3, n_samples=50), make_map(GRID, 1e-3)
    np.testing.assert_allclose(
        with_samples.density(30.0).value, np.percentile(with_samples.density_samples, 30.0, axis=0)
    )
    with pytest.raises(ValueError, match="percentile 30 is not stored"):
        without.density(30.0)


def test_keep_samples_default_and_bounds() -> None:
    assert keep_samples_for(None, 200) == posterior_map.DEFAULT_KEEP_SAMPLES
    assert keep_samples_for(None, 5) == 5  # fewer drawn than the default keeps
    assert keep_samples_for(0, 200) == 0


def test_hooks_are_registered_by_name_only(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="expected 'query', 'write' or 'read'"):
        register_product("plot", print)
    monkeypatch.setattr(posterior_map, "_PRODUCTS", {})
    with pytest.raises(RuntimeError, match="no 'write' function is registered"):
        make_map(GRID, 1e-3).save("never.nc")
