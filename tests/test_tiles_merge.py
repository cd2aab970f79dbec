"""Merging tiles into one map (dustgp.tiles.merge): a known field comes back, disagreeing tiles blend without a
seam, bad pieces are named. Pure: no Dask needed."""

from __future__ import annotations

import numpy as np
import pytest

from dustgp.grid import Grid
from dustgp.tiles import TileError, merge_tiles, plan_tiles
from tiles_support import known_density, prediction_of


@pytest.fixture
def region() -> Grid:
    return Grid(l=(50, 90, 20), b=(-10, 10, 20), d=(180, 500, 35), ghost_cells=2)


def test_merge_reproduces_a_known_field(region: Grid) -> None:
    prediction = region.refined(2.5)
    truth = known_density(prediction)
    tiles = plan_tiles(region, n_l=3, n_b=2, n_d=1, overlap=2)
    pieces = []
    for tile in tiles:
        _, index = tile.piece(prediction)
        pieces.append(prediction_of(truth[index], tile.piece(prediction)[0], std=1e-4, n_samples=3))
    merged = merge_tiles(prediction, tiles, pieces, meta={"note": "synthetic"})
    np.testing.assert_allclose(merged.density_mean, truth, rtol=1e-12)
    np.testing.assert_allclose(merged.extinction_mean, np.cumsum(truth * prediction.path_lengths[:, None, None], 0))
    np.testing.assert_allclose(merged.density_std, 1e-4, rtol=1e-12)
    np.testing.assert_allclose(merged.density_percentiles[2], truth, rtol=1e-12)  # the median
    np.testing.assert_allclose(merged.density_samples, np.repeat(truth[None], 3, 0).astype(np.float32), rtol=1e-6)
    assert merged.meta == {"note": "synthetic"}


@pytest.mark.parametrize(("blend", "seamless"), [(1.0, True), (0.0, False)])
def test_merge_of_disagreeing_tiles_has_no_seam(region: Grid, blend: float, seamless: bool) -> None:
    """Tiles that disagree by 10% (as independent fits do) blend without a step; a hard cut (blend 0) steps."""
    prediction = region.refined(2.5)
    truth = known_density(prediction)
    tiles = plan_tiles(region, n_l=2, n_b=1, overlap=2, blend=blend)
    pieces = []
    for tile in tiles:
        piece, index = tile.piece(prediction)
        pieces.append(prediction_of(truth[index] * (1.0 + 0.1 * tile.index), piece))
    merged = merge_tiles(prediction, tiles, pieces)
    ratio = np.log(merged.density_mean / truth)  # 0 in tile 0's core, log 1.1 in tile 1's, a ramp between
    steps = np.abs(np.diff(ratio, axis=2))
    if seamless:
        # cosine taper over 2h = 2 × 2 cells × 2.5 = 10 prediction cells: steepest step π/2 × log(1.1) / 10
        assert steps.max() < 1.1 * np.pi / 2 * np.log(1.1) / 10
    else:
        assert steps.max() == pytest.approx(np.log(1.1))


def test_merge_rejects_pieces_of_the_wrong_shape(region: Grid) -> None:
    prediction = region.refined(2.0)
    tiles = plan_tiles(region, n_l=2, n_b=1)
    wrong = prediction_of(np.ones((3, 3, 3)), Grid(l=(0, 3, 3), b=(0, 3, 3), d=(10, 13, 3), ghost_cells=0))
    with pytest.raises(TileError, match=r"tile 0 .*expected a piece of shape"):
        merge_tiles(prediction, tiles, [wrong, wrong])


def test_merge_counts_predictions_and_tiles(region: Grid) -> None:
    prediction = region.refined(2.0)
    tiles = plan_tiles(region, n_l=2, n_b=1)
    piece = prediction_of(known_density(prediction)[tiles[0].piece(prediction)[1]], tiles[0].piece(prediction)[0])
    with pytest.raises(TileError, match="expected one prediction per tile, got 1 for 2 tiles"):
        merge_tiles(prediction, tiles, [piece])
    with pytest.raises(TileError, match="expected at least one tile"):
        merge_tiles(prediction, [], [])


def test_merge_names_cells_no_tile_covers(region: Grid) -> None:
    # the first of two tiles alone leaves the second one's core uncovered
    prediction = region.refined(2.0)
    tiles = plan_tiles(region, n_l=2, n_b=1)
    piece, index = tiles[0].piece(prediction)
    with pytest.raises(TileError, match=r"cells of .* have no tile; first \(d, b, l\)"):
        merge_tiles(prediction, tiles[:1], [prediction_of(known_density(prediction)[index], piece)])


def test_merged_map_knows_where_the_stars_constrain_it(region: Grid) -> None:
    # issue 11: a tiled map carries the coverage flags and reliable distances of its tiles. Each tile here says
    # its stars reach a distance of its own; a cell is constrained where any tile covering it says so, and a
    # column's reliable range runs from the nearest to the farthest star of the tiles over it.
    prediction = region.refined(2.5)
    truth = known_density(prediction)
    tiles = plan_tiles(region, n_l=3, n_b=2, n_d=1, overlap=2)
    expected_far = np.full((prediction.n_b, prediction.n_l), -np.inf)
    expected_near = np.full((prediction.n_b, prediction.n_l), np.inf)
    pieces = []
    for k, tile in enumerate(tiles):
        piece, index = tile.piece(prediction)
        p = prediction_of(truth[index], piece)
        near, far = 200.0 + 5.0 * k, 300.0 + 20.0 * k
        p.reliable_distance = np.stack([np.full(piece.shape[1:], near), np.full(piece.shape[1:], far)])
        p.coverage = np.broadcast_to(piece.d_centers[:, None, None] <= far, piece.shape).copy()
        pieces.append(p)
        weight = tile.piece_weights(prediction, index)
        columns = (weight > 0).any(axis=0)
        _, sb, sl = index
        expected_far[sb, sl] = np.where(columns, np.maximum(expected_far[sb, sl], far), expected_far[sb, sl])
        expected_near[sb, sl] = np.where(columns, np.minimum(expected_near[sb, sl], near), expected_near[sb, sl])
    merged = merge_tiles(prediction, tiles, pieces)
    assert merged.coverage is not None
    assert merged.reliable_distance is not None
    np.testing.assert_array_equal(merged.coverage, prediction.d_centers[:, None, None] <= expected_far[None])
    np.testing.assert_array_equal(merged.reliable_distance[1], expected_far)
    np.testing.assert_array_equal(merged.reliable_distance[0], expected_near)
    # one tile that does not know its coverage: the merged map claims none
    pieces[0].coverage = None
    assert merge_tiles(prediction, tiles, pieces).coverage is None
