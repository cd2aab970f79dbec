"""Tile geometry (dustgp.tiles.geometry): cores, training grids, blend weights and pieces. Pure: no Dask needed."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest

from dustgp.grid import Grid, GridError
from dustgp.tiles import Tile, plan_tiles


@pytest.fixture
def region() -> Grid:
    return Grid(l=(50, 90, 20), b=(-10, 10, 20), d=(180, 500, 35), ghost_cells=2)


def weight_sum(tiles: list[Tile], l: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
    return sum(t.weight(l, b, d) for t in tiles)


def test_plan_cores_partition_the_region(region: Grid) -> None:
    tiles = plan_tiles(region, n_l=3, n_b=2, n_d=2, overlap=2)
    assert len(tiles) == 12
    assert [t.index for t in tiles] == list(range(12))
    assert [t.layer for t in tiles] == [0] * 6 + [1] * 6  # near to far
    l, b, d = region.cell_centers_lbd()
    l, b, d = (x[region.ghost_cells :] for x in (l, b, d))
    owners = np.zeros(l.shape, dtype=int)
    for tile in tiles:
        (l0, l1), (b0, b1), (d0, d1) = tile.core
        owners += (l >= l0) & (l < l1) & (b >= b0) & (b < b1) & (d >= d0) & (d < d1)
    assert np.all(owners == 1)  # every cell of the region in exactly one core


def test_plan_training_grids_share_the_overlap(region: Grid) -> None:
    overlap = 2
    tiles = plan_tiles(region, n_l=3, n_b=2, n_d=2, overlap=overlap)
    region_d = region.d_edges[region.ghost_cells :]
    for tile in tiles:
        # training grids are made of the parent's cells
        assert np.isin(tile.grid.l_edges, region.l_edges).all()
        assert np.isin(tile.grid.b_edges, region.b_edges).all()
        assert np.isin(tile.grid.d_edges[tile.grid.ghost_cells :], region_d).all()
        assert tile.grid.ghost_cells == (region.ghost_cells if tile.layer == 0 else 0)
        # the core plus `overlap` cells on each side with a neighbour, nothing on outer sides
        for axis, edges in enumerate(
            (tile.grid.l_edges, tile.grid.b_edges, tile.grid.d_edges[tile.grid.ghost_cells :])
        ):
            parent = (region.l_edges, region.b_edges, region_d)[axis]
            lo, hi = tile.core[axis]
            below, above = tile.neighbours[axis]
            i_lo, i_hi = np.searchsorted(parent, [lo, hi])
            assert edges[0] == pytest.approx(parent[i_lo - overlap] if below else lo)
            assert edges[-1] == pytest.approx(parent[i_hi + overlap] if above else hi)
    # neighbours along l share 2 × overlap cells
    first, second = tiles[0].grid, tiles[1].grid
    assert np.count_nonzero(np.isin(first.l_centers, second.l_centers)) == 2 * overlap


def test_weights_sum_to_one_everywhere(region: Grid, rng: np.random.Generator) -> None:
    tiles = plan_tiles(region, n_l=3, n_b=2, n_d=2, overlap=(2 * u.deg, 3, 25 * u.pc))
    # random points inside and somewhat beyond the region (the outermost tiles extend to infinity)
    l = rng.uniform(45, 95, 20_000)
    b = rng.uniform(-12, 12, 20_000)
    d = rng.uniform(0, 550, 20_000)
    weights = np.stack([t.weight(l, b, d) for t in tiles])
    assert np.all((weights >= 0) & (weights <= 1))
    np.testing.assert_allclose(weights.sum(0), 1.0, atol=1e-12)
    # deep inside a core, one tile holds all the weight; outside its training grid, a tile has none
    tile = tiles[0]
    assert tile.weight(52.0, -8.0, 200.0) == 1.0
    assert tile.weight(tile.grid.l_edges[-1] + 0.1, -8.0, 200.0) == 0.0


def test_weights_across_longitude_zero() -> None:
    grid = Grid(l=(350, 10, 20), b=(-5, 5, 4), d=(100, 200, 5), ghost_cells=1)
    tiles = plan_tiles(grid, n_l=2, n_b=1, overlap=2)
    assert tiles[0].core[0] == (350.0, 360.0)
    l = np.concatenate([np.linspace(345, 359.99, 50), np.linspace(0, 15, 50)])
    np.testing.assert_allclose(weight_sum(tiles, l, np.zeros_like(l), np.full_like(l, 150.0)), 1.0, atol=1e-12)
    assert tiles[0].weight(355.0, 0.0, 150.0) == 1.0
    assert tiles[1].weight(5.0, 0.0, 150.0) == 1.0
    assert tiles[0].contains(np.array([359.0, 1.0, 5.0]), np.zeros(3), np.full(3, 150.0)).tolist() == [
        True,
        True,
        False,
    ]


def test_quantity_overlap_rounds_up_to_cells(region: Grid) -> None:
    # l cells are 2 deg wide: 3 deg needs 2 cells; d cells are 320/35 = 9.1 pc: 20 pc needs 3 cells
    tiles = plan_tiles(region, n_l=2, n_b=1, n_d=2, overlap=(3 * u.deg, 0, 20 * u.pc))
    assert tiles[0].grid.n_l == 10 + 2
    assert tiles[0].grid.n_d - tiles[0].grid.ghost_cells == 18 + 3  # cores of 18 and 17 cells
    assert tiles[0].blend[0] == (0.0, pytest.approx(4.0))  # half-width = blend × shared margin (2 cells)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_l": 21, "n_b": 1}, "at most 20 tiles"),
        ({"n_l": 0, "n_b": 1}, "positive number of tiles"),
        ({"n_l": 2, "n_b": 1, "overlap": 1.5}, "non-negative number of cells"),
        ({"n_l": 2, "n_b": 1, "overlap": 2 * u.deg}, "one value per axis"),
        ({"n_l": 2, "n_b": 1, "overlap": (1, 1, 2 * u.deg)}, "along d: expected a non-negative scalar in pc"),
        ({"n_l": 10, "n_b": 1, "overlap": 2}, "do not fit in a core"),
        ({"n_l": 2, "n_b": 1, "blend": 1.5}, "blend"),
    ],
)
def test_plan_rejects_bad_options(region: Grid, options: dict, message: str) -> None:
    with pytest.raises(GridError, match=message):
        plan_tiles(region, **options)


def test_pieces_of_the_prediction_grid(region: Grid) -> None:
    prediction = region.refined(2.5)
    tiles = plan_tiles(region, n_l=2, n_b=2, n_d=2, overlap=2)
    for tile in tiles:
        piece, (sd, sb, sl) = tile.piece(prediction)
        assert piece.shape == (sd.stop - sd.start, sb.stop - sb.start, sl.stop - sl.start)
        np.testing.assert_allclose(piece.l_edges, prediction.l_edges[sl.start : sl.stop + 1])
        if tile.layer == 0:
            assert sd.start == 0
            assert piece.ghost_cells == prediction.ghost_cells
        else:
            assert sd.start > prediction.ghost_cells
            assert piece.ghost_cells == 0
        # the piece holds every cell where the tile has weight
        weights = tile.weight(*prediction.cell_centers_lbd())
        inside = np.zeros(prediction.shape, dtype=bool)
        inside[sd, sb, sl] = True
        assert not np.any(weights[~inside] > 0)


def test_layer_weights_ignore_distance(region: Grid) -> None:
    # a layer's own merge (axes="lb") weighs by l and b only: equal along distance, and the l, b weights of the
    # tiles of one layer sum to one on every cell of the prediction grid
    prediction = region.refined(2.5)
    tiles = plan_tiles(region, n_l=3, n_b=2, n_d=2, overlap=2)
    near = [t for t in tiles if t.layer == 0]
    total = np.zeros(prediction.shape)
    for tile in near:
        _, index = tile.piece(prediction)
        w = tile.piece_weights(prediction, index, axes="lb")
        np.testing.assert_array_equal(w, np.broadcast_to(w[:1], w.shape))
        total[:, index[1], index[2]] += w[0]
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
