"""A parallax catalogue's distance posteriors are tabulated once: with its distances when it is read (the nodes of
``DISTANCE_NODES``), then kept on the catalogue, carried by its subsets and inflated copies, and used by the fit,
its coarse stage and its likelihood without a new table; the cached nodes equal a fresh computation, to the bit.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from astropy.table import Table

import dustgp
from dustgp.catalog import (
    DISTANCE_NODES,
    Catalog,
    CatalogError,
    distances,
    parallax_distance_percentiles,
    parallax_nodes,
    parallax_percentiles_and_nodes,
)
from dustgp.fitting import FitConfig
from dustgp.fitting.loop import coarse_start_grid
from dustgp.grid import Grid
from dustgp.likelihood import StarNodes
from dustgp.sightlines import Sightlines

#: A grid small enough for a quick fit, with a coarse stage for ten inducing points (48 coarse cells >= 2 x 10).
GRID = Grid(l=(60, 70, 8), b=(-4, 4, 4), d=(100, 600, 10), ghost_cells=1)
QUICK = {"method": "newton", "inducing_points": 10, "max_iterations": 2, "seed": 1, "likelihood": "gaussian"}


def _stars(n: int = 300, seed: int = 3) -> Table:
    """Stars on :data:`GRID` with parallaxes of S/N 2-40 (mas) and extinctions of a uniform medium (mag)."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(150.0, 550.0, n)
    err = rng.uniform(0.05, 1.0, n)
    table = Table({"l": rng.uniform(60.5, 69.5, n), "b": rng.uniform(-3.5, 3.5, n), "A0": 1e-3 * d})
    table["A0_err"], table["plx"], table["plx_err"] = 0.05, 1000.0 / d + err * rng.standard_normal(n), err
    return table


@pytest.fixture
def tabulations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every table of parallax posteriors made from now on, as its number of stars."""
    made: list[int] = []
    tabulate = distances._quantiles

    def counted(parallax, *args, **kwargs):
        made.append(len(parallax))
        return tabulate(parallax, *args, **kwargs)

    monkeypatch.setattr(distances, "_quantiles", counted)
    return made


def test_percentiles_and_nodes_come_from_one_table_to_the_bit(tabulations) -> None:
    table = _stars(60)
    plx, err = np.asarray(table["plx"]), np.asarray(table["plx_err"])
    percentiles, nodes = parallax_percentiles_and_nodes(plx, err, (16, 50, 84), 6, length_scale=900.0)
    assert tabulations == [60]
    np.testing.assert_array_equal(percentiles, parallax_distance_percentiles(plx, err, length_scale=900.0))
    np.testing.assert_array_equal(nodes, parallax_nodes(plx, err, 6, length_scale=900.0)[0])
    with pytest.raises(ValueError, match=r"k: expected an integer >= 1, got 0"):
        parallax_percentiles_and_nodes(plx, err, (50,), 0)
    with pytest.raises(ValueError, match=r"q: expected percentiles in \(0, 100\)"):
        parallax_percentiles_and_nodes(plx, err, (0,), 4)


def test_reading_tabulates_the_distances_and_the_fits_nodes_once(tabulations) -> None:
    catalog = Catalog.from_table(_stars(), parallax="plx", parallax_err="plx_err", parallax_length_scale=800.0)
    assert tabulations == [300]
    assert set(catalog.distance_node_cache) == {DISTANCE_NODES}
    assert FitConfig().distance_nodes == DISTANCE_NODES  # what a fit uses by default
    nodes, log_w = catalog.distance_nodes(DISTANCE_NODES)
    assert tabulations == [300]  # read from the cache
    fresh, fresh_w = parallax_nodes(catalog.parallax, catalog.parallax_err, DISTANCE_NODES, length_scale=800.0)
    np.testing.assert_array_equal(nodes, fresh)
    np.testing.assert_array_equal(log_w, fresh_w)
    assert not nodes.flags.writeable
    with pytest.raises(TypeError):
        catalog.distance_node_cache[3] = nodes  # a read-only view
    # a catalogue without parallaxes caches nothing (its log-normal nodes cost nothing)
    plain = Catalog.from_table(_stars(), distance="A0", distance_err="A0_err", inflate=False)
    assert dict(plain.distance_node_cache) == {}


def test_subsets_and_inflated_copies_keep_the_cached_rows(tabulations) -> None:
    catalog = Catalog.from_table(_stars(), parallax="plx", parallax_err="plx_err")
    extra = catalog.distance_nodes(5)[0]  # another k: tabulated once, then cached too
    assert tabulations == [300, 300]
    assert catalog.distance_nodes(5)[0] is extra
    rows = np.array([7, 3, 250, 3])
    subset = catalog.select(rows)
    kept, held_out = catalog.split(0.7, seed=2)
    reinflated = catalog.inflate_for_distance(1e-3)
    for k in (DISTANCE_NODES, 5):
        full = catalog.distance_nodes(k)[0]
        np.testing.assert_array_equal(subset.distance_nodes(k)[0], full[rows])
        np.testing.assert_array_equal(reinflated.distance_nodes(k)[0], full)
        both = np.concatenate([kept.distance_nodes(k)[0], held_out.distance_nodes(k)[0]])
        np.testing.assert_array_equal(np.sort(both, axis=0), np.sort(full, axis=0))
    assert tabulations == [300, 300]  # none of them tabulated again
    # and the cached rows are what a fresh table of the subset gives
    np.testing.assert_array_equal(
        subset.distance_nodes(5)[0], parallax_nodes(subset.parallax, subset.parallax_err, 5)[0]
    )


def test_the_constructor_checks_a_node_cache() -> None:
    args = ([10.0, 20.0], [0.0, 1.0], [100.0, 200.0], [0.1, 0.2], [0.1, 0.1])
    plx = {"parallax": [10.0, 5.0], "parallax_err": [0.5, 0.5]}
    good = np.array([[90.0, 110.0], [180.0, 220.0]])
    assert Catalog(*args, **plx, distance_node_cache={2: good}).distance_nodes(2)[0].tolist() == good.tolist()
    with pytest.raises(CatalogError, match="distance_node_cache: nodes of parallax posteriors given without"):
        Catalog(*args, distance_node_cache={2: good})
    with pytest.raises(CatalogError, match=r"distance_node_cache\[3\]: expected shape \(2, 3\) \(stars, nodes\)"):
        Catalog(*args, **plx, distance_node_cache={3: good})
    with pytest.raises(CatalogError, match=r"distance_node_cache: expected integer keys k >= 1"):
        Catalog(*args, **plx, distance_node_cache={"2": good})
    with pytest.raises(CatalogError, match=r"distance_node_cache\[2\]: expected finite distances > 0 pc"):
        Catalog(*args, **plx, distance_node_cache={2: np.where(good > 200, np.nan, good)})


@pytest.mark.parametrize("k", [DISTANCE_NODES, 5], ids=["default-k", "other-k"])
def test_a_fit_with_a_coarse_start_tabulates_the_posteriors_once(tabulations, caplog, k: int) -> None:
    catalog = Catalog.from_table(_stars(), parallax="plx", parallax_err="plx_err", inflate=False)
    assert coarse_start_grid(GRID, FitConfig(**QUICK)) is not None
    read = list(tabulations)
    with caplog.at_level(logging.INFO, logger="dustgp.fitting"):
        result = dustgp.fit(catalog, GRID, progress=False, distance_nodes=k, **QUICK)
    assert sum("coarse start" in r.getMessage() for r in caplog.records) == 1  # the coarse stage ran
    # the read's table serves a fit of the default k; another k is tabulated once, for the stars on the grid,
    # and the coarse stage takes their rows
    assert tabulations[len(read) :] == ([] if k == DISTANCE_NODES else [result.stars["used"]])
    # the likelihood is the one of freshly tabulated nodes
    likelihood = result.likelihood
    assert likelihood.distance_treatment == "quadrature"
    on_grid = catalog.select(Sightlines.from_positions(GRID, catalog.l, catalog.b, catalog.distance).star_index)
    assert likelihood.nodes.n_stars == len(on_grid) == result.stars["used"]
    fresh = StarNodes.build(GRID, on_grid.l, on_grid.b, *parallax_nodes(on_grid.parallax, on_grid.parallax_err, k))
    np.testing.assert_array_equal(likelihood.nodes.star, fresh.star)
    np.testing.assert_array_equal(likelihood.nodes.log_prior, fresh.log_prior)
    np.testing.assert_array_equal(likelihood.nodes.sightlines.cell, fresh.sightlines.cell)
    np.testing.assert_array_equal(likelihood.nodes.sightlines.fraction, fresh.sightlines.fraction)
    assert torch.all(torch.isfinite(torch.as_tensor(result.losses)))
