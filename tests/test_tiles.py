"""Tiling: plan geometry, blend weights, merging, retries, the far tiles' foreground, and a small end-to-end fit."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from statistics import NormalDist

import astropy.units as u
import numpy as np
import pytest

from dustgp import Catalog, Grid, simulate
from dustgp.dustmap import DEFAULT_PERCENTILES
from dustgp.grid import GridError
from dustgp.tiles import Tile, TileError, TileJob, TilePrediction, TileStars, fit_tiles, merge_tiles, plan_tiles

# only the tests that run tasks need distributed (the dask extra); geometry, weights and merging run without it
needs_distributed = pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None, reason="needs distributed (pip install dustgp[dask])"
)

Z = np.array([NormalDist().inv_cdf(q / 100.0) for q in DEFAULT_PERCENTILES])


@pytest.fixture
def region() -> Grid:
    return Grid(l=(50, 90, 20), b=(-10, 10, 20), d=(180, 500, 35), ghost_cells=2)


@pytest.fixture(scope="module")
def local_client():
    """An in-process cluster: starts in about a second, runs the stand-in tasks below without pickling trouble."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def weight_sum(tiles: list[Tile], l: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
    return sum(t.weight(l, b, d) for t in tiles)


# ----- plan geometry ------------------------------------------------------------------------------------------
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


# ----- merging --------------------------------------------------------------------------------------------
def known_density(grid: Grid) -> np.ndarray:
    l, b, d = grid.cell_centers_lbd()
    return 1e-3 * (1.0 + 0.5 * np.sin(np.radians(4 * l)) * np.cos(np.radians(9 * b)) + d / 500.0)


def prediction_of(density: np.ndarray, grid: Grid, *, std: float = 0.0, n_samples: int = 0) -> TilePrediction:
    """A Gaussian-shaped TilePrediction of a known density on ``grid`` (extinction from its near edge)."""
    ext = np.cumsum(density * grid.path_lengths[:, None, None], axis=0)
    return TilePrediction(
        density_mean=density,
        density_std=np.full_like(density, std),
        density_percentiles=density + Z[:, None, None, None] * std,
        extinction_mean=ext,
        extinction_std=np.full_like(ext, std),
        extinction_percentiles=ext + Z[:, None, None, None] * std,
        density_samples=np.repeat(density[None], n_samples, axis=0) if n_samples else None,
    )


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


# ----- running: retries and failures with stand-in tasks ----------------------------------------------------
def constant_task(job: TileJob, stars: TileStars) -> TilePrediction:
    """Stand-in for a fit: the density is the least-squares constant through the tile's stars.

    A tile with ghost cells integrates from the Sun; one without from its training grid's d_min, as the model does.
    """
    grid = Grid.from_dict(job.grid)
    path = stars.distance - (0.0 if grid.ghost_cells else grid.d_min)
    rho = float(np.sum(stars.extinction * path) / np.sum(path * path))
    piece = Grid.from_dict(job.piece)
    result = prediction_of(np.full(piece.shape, rho), piece, std=0.05)
    result.info = {"stars": {"used": len(stars)}, "sigma_median": float(np.median(stars.extinction_err))}
    return result


def failing_once(marker: Path, failing_tile: int):
    def task(job: TileJob, stars: TileStars) -> TilePrediction:
        if job.index == failing_tile and not marker.exists():
            marker.touch()
            raise RuntimeError("worker hiccup")
        return constant_task(job, stars)

    return task


def failing_always(job: TileJob, stars: TileStars) -> TilePrediction:
    if job.index == 1:
        raise ValueError("bad tile data")
    return constant_task(job, stars)


def uniform_sky(rng: np.random.Generator, grid: Grid, rho: float = 2e-3, n: int = 4000) -> Catalog:
    """Noise-free stars in a uniform medium of density ``rho`` filling 0 .. d_max (foreground included)."""
    l = rng.uniform(grid.l_edges[0], grid.l_edges[-1], n)
    b = rng.uniform(grid.b_edges[0], grid.b_edges[-1], n)
    d = rng.uniform(grid.d_min, grid.d_max, n)
    return Catalog(l, b, d, rho * d, np.full(n, 0.01))


def test_a_failed_tile_is_retried(local_client, rng: np.random.Generator, tmp_path: Path, caplog) -> None:
    grid = Grid(l=(50, 60, 10), b=(-5, 5, 4), d=(100, 200, 10), ghost_cells=1)
    tiles = plan_tiles(grid, n_l=2, n_b=1)
    with caplog.at_level(logging.INFO, logger="dustgp.tiles"):
        dmap = fit_tiles(
            uniform_sky(rng, grid),
            grid,
            tiles=tiles,
            prediction_grid=grid,
            client=local_client,
            task=failing_once(tmp_path / "failed-once", failing_tile=1),
        )
    assert [t["attempts"] for t in dmap.meta["tiles"]] == [1, 2]
    assert "tile 1 [l 2/2, b 1/1, d 1/1]" in caplog.text
    assert "retrying" in caplog.text
    np.testing.assert_allclose(dmap.density_mean, 2e-3, rtol=1e-9)


def test_a_tile_that_always_fails_raises_naming_it(local_client, rng: np.random.Generator) -> None:
    grid = Grid(l=(50, 60, 10), b=(-5, 5, 4), d=(100, 200, 10), ghost_cells=1)
    tiles = plan_tiles(grid, n_l=2, n_b=1)
    with pytest.raises(TileError, match=r"tile 1 \[l 2/2.*failed 3 time\(s\).*bad tile data") as info:
        fit_tiles(uniform_sky(rng, grid), grid, tiles=tiles, client=local_client, retries=2, task=failing_always)
    assert isinstance(info.value.__cause__, ValueError)


def test_a_tile_without_stars_raises(local_client, rng: np.random.Generator) -> None:
    grid = Grid(l=(50, 60, 10), b=(-5, 5, 4), d=(100, 200, 10), ghost_cells=1)
    stars = uniform_sky(rng, grid)
    west = stars.select(stars.l < 52.0)  # tile 1 trains on l 53..60
    with pytest.raises(TileError, match=r"tile 1 .* holds no star"):
        fit_tiles(west, grid, tiles=plan_tiles(grid, n_l=2, n_b=1), client=local_client, task=constant_task)


def test_far_tiles_take_their_foreground_from_the_near_tiles(local_client, rng: np.random.Generator) -> None:
    """Stars in a uniform medium: a far tile sees only the extinction beyond its d_min, and its map gets it back.

    Also reaches the cluster through its scheduler address (a string) rather than the Client.
    """
    rho = 2e-3
    grid = Grid(l=(50, 60, 10), b=(-5, 5, 4), d=(100, 300, 20), ghost_cells=1)
    prediction = grid.refined(2.0)
    tiles = plan_tiles(grid, n_l=2, n_b=1, n_d=2, overlap=2)
    address = local_client.scheduler.address
    dmap = fit_tiles(
        uniform_sky(rng, grid, rho), grid, tiles=tiles, prediction_grid=prediction, client=address, task=constant_task
    )
    # the far tiles recovered the density only if the foreground was subtracted from their stars' extinction
    np.testing.assert_allclose(dmap.density_mean, rho, rtol=1e-9)
    # and their extinction, integrated from their piece's near edge, had the foreground added back
    far_edges = prediction.d_edges[1:]
    np.testing.assert_allclose(dmap.extinction_mean, rho * far_edges[:, None, None] * np.ones(prediction.shape))
    # the foreground's spread (0.05 mag from the near layer) is added to the far stars' sigma (0.01 mag) ...
    sigmas = {r["position"][2]: r["sigma_median"] for r in dmap.meta["tiles"]}
    assert sigmas == {0: pytest.approx(0.01), 1: pytest.approx(np.hypot(0.01, 0.05))}
    # ... and to the far tiles' extinction: where only far tiles count, std is sqrt(0.05² + 0.05²) and the
    # Gaussian percentiles stay Gaussian
    far_only = prediction.d_centers > tiles[-1].core[2][0] + tiles[-1].blend[2][0]
    np.testing.assert_allclose(dmap.extinction_std[far_only], np.hypot(0.05, 0.05))
    expected = dmap.extinction_mean + Z[:, None, None, None] * dmap.extinction_std
    np.testing.assert_allclose(dmap.extinction_percentiles[:, far_only], expected[:, far_only])
    assert dmap.meta["tiling"]["counts"] == [2, 1, 2]


def test_client_can_be_a_cluster_object(local_client, rng: np.random.Generator) -> None:
    """A cluster object (LocalCluster here; dask-jobqueue clusters are the same kind) gets a Client of its own."""
    grid = Grid(l=(50, 60, 10), b=(-5, 5, 4), d=(100, 200, 10), ghost_cells=1)
    tiles = plan_tiles(grid, n_l=2, n_b=1)
    dmap = fit_tiles(
        uniform_sky(rng, grid), grid, tiles=tiles, prediction_grid=grid, client=local_client.cluster, task=constant_task
    )
    np.testing.assert_allclose(dmap.density_mean, 2e-3, rtol=1e-9)
    assert local_client.status == "running"  # the caller's own Client is left alone


@needs_distributed
def test_client_of_the_wrong_kind(rng: np.random.Generator) -> None:
    grid = Grid(l=(50, 60, 10), b=(-5, 5, 4), d=(100, 200, 10), ghost_cells=1)
    with pytest.raises(TypeError, match="client: expected None, a scheduler address"):
        fit_tiles(uniform_sky(rng, grid), grid, tiles=plan_tiles(grid, n_l=2, n_b=1), client=42, task=constant_task)


# ----- end to end on a small simulated sky, on worker processes ---------------------------------------------
@needs_distributed
def test_end_to_end_on_a_local_cluster() -> None:
    """Two tiles in l over a clump that straddles their boundary (seed 6: clump at l = 60.6 deg, d = 179 pc,
    sigma 26 pc, so it spans ~8 deg on each side), tiny fits (M = 100, 100 iterations).

    Tolerances: with these fits the median |relative density error| of single l columns scatters by about ±20%
    around ~0.13 (measured), so an edge/centre ratio below 1.5 says the boundary is no worse than fit noise. The
    seam test compares the step in log density across the tile boundary with the median step between
    neighbouring columns: measured 0.87 with the taper, 2.9 with a hard cut at the same settings.
    """
    sky = simulate(
        Grid(l=(50, 70, 20), b=(-5, 5, 10), d=(100, 300, 20), ghost_cells=0), n_stars=3000, n_clumps=1, seed=6
    )
    grid = Grid(l=(50, 70, 20), b=(-5, 5, 10), d=(100, 300, 20), ghost_cells=1)
    tiles = plan_tiles(grid, n_l=2, n_b=1, overlap=3)
    dmap = fit_tiles(  # client=None: fit_tiles starts LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
        sky.catalog,
        grid,
        tiles=tiles,
        prediction_grid=grid,
        fit_options={"inducing_points": 100, "max_iterations": 100, "stop": "none"},
        predict_options={"samples": 50, "percentiles": (16.0, 50.0, 84.0)},
    )
    assert [t["attempts"] for t in dmap.meta["tiles"]] == [1, 1]
    assert dmap.meta["predict_options"]["percentiles"] == [16.0, 50.0, 84.0]
    assert sum(t["stars"]["used"] for t in dmap.meta["tiles"]) > len(sky.catalog)  # overlap stars fit twice
    region = slice(grid.ghost_cells, None)
    truth = sky.density_on(grid)[region]
    rel = np.abs(dmap.density_mean[region] / truth - 1.0)
    assert np.median(rel) < 0.3
    per_column = np.median(rel, axis=(0, 1))  # along l; the tile boundary is between columns 9 and 10
    edge, centre = per_column[8:12], per_column[[3, 4, 5, 6, 13, 14, 15, 16]]
    assert np.median(edge) / np.median(centre) < 1.5
    steps = np.median(np.abs(np.diff(np.log10(dmap.density_mean[region]), axis=2)), axis=(0, 1))
    assert steps[9] / np.median(steps) < 1.5
