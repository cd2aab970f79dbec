"""The record of a simulated sky (dustgp.simulate.sky): truth on any grid, its structures by name, and the
catalogue with its truth as a table."""

import json

import astropy.units as u
import numpy as np
import pytest

from dustgp.catalog import MIN_EXTINCTION_ERR
from dustgp.grid import Grid
from dustgp.simulate import REALISTIC_BACKGROUND, simulate
from simulate_support import PAPER_REGION, REGION


def test_realistic_truth_on_a_grid_and_an_empty_foreground() -> None:
    sky = simulate(PAPER_REGION, n_stars=100, structures="realistic", foreground=False, seed=1)
    core = sky.structure("core")
    l, b = core.sightline()
    assert sky.density_at(l, b, sky.peak_distance("core")) == pytest.approx(REALISTIC_BACKGROUND + core.peak, 1e-3)
    assert sky.density_at(l, b, 100.0) == 0.0  # in front of the region
    grid = Grid(l=(50, 90, 8), b=(-10, 10, 4), d=(180, 500, 16), ghost_cells=1)
    rho = sky.density_on(grid)
    assert rho.shape == grid.shape
    assert np.all(rho[0] == 0.0)  # the ghost cell in front is empty
    assert np.all(rho[1:] >= REALISTIC_BACKGROUND)


def test_an_empty_foreground_without_a_floor_still_gives_a_usable_catalogue() -> None:
    # sigma_A = 10% of A and no dust in front of d_min: a star drawn just behind d_min quotes ~1e-7 mag (seed 1 of
    # the stiff benchmark's 40,000 stars has one), below what a catalogue accepts; it quotes the smallest accepted
    sky = simulate(PAPER_REGION, n_stars=40_000, foreground=False, noise=0.1, noise_floor=0.0, seed=1)
    sigma = sky.catalog.extinction_err
    assert sigma.min() == MIN_EXTINCTION_ERR
    raised = sigma == MIN_EXTINCTION_ERR
    assert 0 < raised.sum() < 10
    np.testing.assert_allclose(sigma[~raised], 0.1 * sky.true_extinction[~raised], rtol=1e-12)


def test_extinction_on_a_grid_integrates_its_density() -> None:
    sky = simulate(REGION, n_stars=10, n_clumps=2, seed=5)
    grid = Grid(l=(60, 70, 5), b=(-4, 4, 4), d=(150, 300, 10), ghost_cells=1)
    rho = sky.density_on(grid)
    np.testing.assert_allclose(sky.extinction_on(grid), np.cumsum(rho * grid.path_lengths[:, None, None], 0))
    # the background alone fills 0 .. d_max: 1.6e-3 mag/pc times the distance of each cell's far edge
    bare = simulate(REGION, n_stars=10, structures=(), seed=5)
    far_edges = grid.d_edges[1:, None, None] * np.ones(grid.shape)
    np.testing.assert_allclose(bare.extinction_on(grid), 1.6e-3 * far_edges, rtol=1e-12)


def test_the_table_carries_the_truth() -> None:
    sky = simulate(REGION, n_stars=50, n_clumps=2, distance_errors=(0.05, 0.2), outlier_fraction=0.1, seed=5)
    table = sky.to_table()
    np.testing.assert_array_equal(table["A0_true"], sky.true_extinction)
    np.testing.assert_array_equal(table["distance_true"], sky.true_distance)
    np.testing.assert_array_equal(table["outlier"], sky.outlier)
    assert table["A0_outlier_offset"].unit == u.mag
    assert table["distance_upper"].unit == u.pc
    assert table.meta["dustgp_seed"] == 5
    assert table.meta["foreground"] is True
    assert json.loads(table.meta["structures"]) == json.loads(json.dumps(sky.structure_records()))  # tuples: lists
    assert [r["type"] for r in sky.structure_records()] == ["Clump", "Clump"]
    assert sky.structure("clump") is sky.structures[0]
    with pytest.raises(KeyError, match="no structure named 'core'; known: clump, clump"):
        sky.structure("core")
