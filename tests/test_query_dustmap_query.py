"""dustmaps-style queries: shapes, modes, coverage, continuity in distance, known values."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from hypothesis import given, settings
from hypothesis import strategies as st

from dustgp.grid import Grid
from dustgp.posterior_map import DEFAULT_KEEP_SAMPLES, PosteriorMap, keep_samples_for
from dustgp.query.dustmap_query import DustMapQuery, QueryError
from known_maps import make_map


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20220101)


@pytest.fixture
def grid() -> Grid:
    return Grid(l=(50, 90, 8), b=(-10, 10, 6), d=(180, 500, 16), ghost_cells=2)


@pytest.fixture
def uniform(grid: Grid) -> PosteriorMap:
    return make_map(grid, 1.3e-3, n_samples=9)


def galactic(l, b, d_pc) -> SkyCoord:
    return SkyCoord(
        l=np.asarray(l) * u.deg, b=np.asarray(b) * u.deg, distance=np.asarray(d_pc) * u.pc, frame="galactic"
    )


# ----- known values -----------------------------------------------------------------------------------------
def test_uniform_density_gives_rho_times_distance(uniform: PosteriorMap, rng: np.random.Generator) -> None:
    # A(d) = rho d exactly for a uniform density, at any distance (inside cells, on edges, in ghost cells)
    rho = 1.3e-3
    d = np.concatenate([rng.uniform(0, 500, 200), uniform.grid.d_edges])
    l, b = rng.uniform(50, 90, d.size), rng.uniform(-10, 10, d.size)
    got = DustMapQuery(uniform).query(galactic(l, b, d))
    np.testing.assert_allclose(got, rho * d, rtol=1e-12, atol=1e-15)


def test_samples_at_cell_edges_equal_integrated_samples(grid: Grid, rng: np.random.Generator) -> None:
    dmap = make_map(grid, rng.uniform(1e-4, 3e-3, grid.shape), n_samples=5)
    q = DustMapQuery(dmap)
    i_b, i_l = 3, 5
    edges = grid.d_edges[1:]
    got = q.query_lbd(grid.l_centers[i_l], grid.b_centers[i_b], edges, mode="samples")
    np.testing.assert_array_equal(got, dmap.extinction_samples()[:, :, i_b, i_l].T)


def test_within_a_cell_extinction_grows_by_the_cell_density(grid: Grid, rng: np.random.Generator) -> None:
    # paper Eq. 8: A(d) = A(near edge) + rho_j (d - d_near), sample by sample
    dmap = make_map(grid, rng.uniform(1e-4, 3e-3, grid.shape), n_samples=4)
    q = DustMapQuery(dmap)
    j, i_b, i_l = 7, 2, 4
    near = grid.d_edges[j]
    d = near + 0.37 * grid.path_lengths[j]
    l, b = grid.l_centers[i_l], grid.b_centers[i_b]
    a_near = dmap.extinction_samples()[:, j - 1, i_b, i_l]
    expected = a_near + dmap.density_samples[:, j, i_b, i_l] * (d - near)
    np.testing.assert_allclose(q.query_lbd(l, b, d, mode="samples"), expected, rtol=1e-12)
    expected_mean = dmap.extinction_mean[j - 1, i_b, i_l] + dmap.density_mean[j, i_b, i_l] * (d - near)
    np.testing.assert_allclose(q.query_lbd(l, b, d), expected_mean, rtol=1e-12)


# ----- shapes -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(), (5,), (3, 4)])
@pytest.mark.parametrize(
    ("mode", "pct", "tail"),
    [
        ("mean", None, ()),
        ("median", None, ()),
        ("std", None, ()),
        ("random_sample", None, ()),
        ("random_sample_per_pix", None, ()),
        ("samples", None, (9,)),
        ("percentile", 16, ()),
        ("percentile", [16, 84, 50], (3,)),
    ],
)
def test_output_has_the_shape_of_the_coordinates(
    uniform: PosteriorMap, rng: np.random.Generator, shape, mode, pct, tail
) -> None:
    l, b, d = rng.uniform(50, 90, shape), rng.uniform(-10, 10, shape), rng.uniform(0, 500, shape)
    out = DustMapQuery(uniform, seed=1).query(galactic(l, b, d), mode=mode, pct=pct)
    assert np.shape(out) == shape + tail
    if shape == () and tail == ():
        assert np.ndim(out) == 0
        assert np.isfinite(out)


def test_return_flags(uniform: PosteriorMap) -> None:
    coords = galactic([60, 60, 60, 120], [0, 0, 0, 0], [100, 300, 600, 300])
    values, flags = DustMapQuery(uniform).query(coords, return_flags=True)
    assert flags.shape == (4,)
    np.testing.assert_array_equal(flags["in_bounds"], [True, True, False, False])
    np.testing.assert_array_equal(flags["reliable_dist"], [False, True, False, False])  # 100 pc: ghost cells
    assert np.isnan(values[2:]).all()


# ----- coverage ---------------------------------------------------------------------------------------------
def test_nan_outside_the_map(uniform: PosteriorMap) -> None:
    q = DustMapQuery(uniform)
    l = [49.9, 90.1, 60, 60, 60, 60, 60]
    b = [0, 0, -10.1, 10.1, 0, 0, 0]
    d = [300, 300, 300, 300, 500.0001, np.inf, np.nan]
    assert np.isnan(q.query(galactic(l, b, d))).all()
    assert np.isnan(q.query(galactic(l, b, d), mode="samples")).all()
    # the far edges belong to the map
    assert np.isfinite(q.query(galactic([50, 90, 60], [-10, 10, 0], [500, 500, 500]))).all()


def test_map_crossing_l_zero() -> None:
    grid = Grid(l=(350, 10, 10), b=(-5, 5, 4), d=(100, 300, 5), ghost_cells=1)
    q = DustMapQuery(make_map(grid, 2e-3))
    out = q.query_lbd([355, 5, 0, 359.99, 360.0, -5, 20, 340], 0, 200)
    np.testing.assert_allclose(out[:6], 0.4, rtol=1e-12)
    assert np.isnan(out[6:]).all()


def test_no_ghost_cells_zero_extinction_in_front(grid: Grid) -> None:
    g0 = grid.with_ghost_cells(0)
    q = DustMapQuery(make_map(g0, 1e-3))
    np.testing.assert_allclose(q.query_lbd(60, 0, [0, 100, 180, 280]), [0, 0, 0, 0.1], rtol=1e-12, atol=0)
    assert np.isnan(DustMapQuery(make_map(g0, 1e-3), integrated=False).query_lbd(60, 0, 100))


def test_coordinates_without_distance_are_refused(uniform: PosteriorMap) -> None:
    with pytest.raises(QueryError, match="distance"):
        DustMapQuery(uniform).query(SkyCoord(l=60 * u.deg, b=0 * u.deg, frame="galactic"))
    with pytest.raises(TypeError, match="SkyCoord"):
        DustMapQuery(uniform).query((60, 0, 300))


def test_any_frame_is_transformed_to_galactic(uniform: PosteriorMap, rng: np.random.Generator) -> None:
    gal = galactic(rng.uniform(52, 88, 20), rng.uniform(-9, 9, 20), rng.uniform(0, 500, 20))
    q = DustMapQuery(uniform)
    np.testing.assert_allclose(q(gal.icrs), q(gal), rtol=1e-12)


# ----- modes ------------------------------------------------------------------------------------------------
def test_modes_use_the_stored_summaries(uniform: PosteriorMap) -> None:
    q = DustMapQuery(uniform)
    c = galactic(61, 1, 333.0)
    a = 1.3e-3 * 333.0
    np.testing.assert_allclose(q(c, mode="median"), a, rtol=1e-12)
    np.testing.assert_allclose(q(c, mode="std"), 0.2 * a, rtol=1e-12)  # std stored as 0.2 A: linear in d
    np.testing.assert_allclose(q(c, mode="percentile", pct=[16, 84]), [0.66 * a, 1.34 * a], rtol=1e-12)


def test_unstored_percentile_comes_from_samples(uniform: PosteriorMap) -> None:
    q = DustMapQuery(uniform)
    c = galactic([61, 70], [1, -3], [333.0, 250.0])
    samples = q(c, mode="samples")
    expected = np.percentile(samples, 30, axis=-1)
    np.testing.assert_allclose(q(c, mode="percentile", pct=30), expected, rtol=1e-12)
    no_samples = make_map(uniform.grid, 1e-3)
    with pytest.raises(QueryError, match="not stored"):
        DustMapQuery(no_samples)(c, mode="percentile", pct=30)
    with pytest.raises(QueryError, match="samples"):
        DustMapQuery(no_samples)(c, mode="samples")
    with pytest.raises(QueryError, match="pct"):
        q(c, mode="percentile")
    with pytest.raises(QueryError, match="mode"):
        q(c, mode="best")


def test_random_sample_is_one_of_the_samples_and_reproducible(uniform: PosteriorMap, rng: np.random.Generator) -> None:
    c = galactic(rng.uniform(50, 90, 50), rng.uniform(-10, 10, 50), rng.uniform(0, 500, 50))
    all_samples = DustMapQuery(uniform)(c, mode="samples")
    picked = DustMapQuery(uniform, seed=3)(c, mode="random_sample")
    assert np.all(np.any(np.isclose(all_samples, picked[:, None], rtol=1e-14), axis=1))
    np.testing.assert_array_equal(picked, DustMapQuery(uniform, seed=3)(c, mode="random_sample"))


def test_random_sample_per_pix_shares_the_sample_within_a_pixel(grid: Grid, rng: np.random.Generator) -> None:
    dmap = make_map(grid, 1e-3, n_samples=50)
    # two positions in one pixel at the same distance, many times: the same draw for both
    l = np.repeat(grid.l_centers[2], 40) + np.tile([-0.5, 0.5], 20)
    out = DustMapQuery(dmap, seed=5)(galactic(l, 0.5, 300.0), mode="random_sample_per_pix")
    np.testing.assert_array_equal(out[0::2], out[1::2])
    assert np.unique(out).size == 1  # all 40 positions share one pixel


def test_density_mode(uniform: PosteriorMap, rng: np.random.Generator) -> None:
    grid = uniform.grid
    rho = rng.uniform(1e-4, 3e-3, grid.shape)
    q = DustMapQuery(make_map(grid, rho, n_samples=3), integrated=False)
    j, i_b, i_l = 9, 1, 6
    d = grid.d_edges[j] + 0.5 * grid.path_lengths[j]
    assert q.query_lbd(grid.l_centers[i_l], grid.b_centers[i_b], d) == rho[j, i_b, i_l]
    assert q.query_lbd(grid.l_centers[i_l], grid.b_centers[i_b], d, mode="samples").shape == (3,)


# ----- properties -------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 60))
def test_extinction_never_decreases_along_a_sightline(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    grid = Grid(l=(50, 90, 4), b=(-10, 10, 3), d=np.sort(rng.uniform(20, 600, 7)), ghost_cells=int(seed % 3))
    dmap = make_map(grid, rng.lognormal(-7, 2, grid.shape), n_samples=6, seed=seed)
    q = DustMapQuery(dmap)
    d = np.sort(rng.uniform(0, grid.d_max, n))
    l, b = rng.uniform(50, 90), rng.uniform(-10, 10)
    mean = q.query_lbd(l, b, d)
    samples = q.query_lbd(l, b, d, mode="samples")  # (n, n_samples)
    assert np.all(np.diff(mean) >= 0)
    assert np.all(np.diff(samples, axis=0) >= 0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), delta=st.floats(1e-9, 1e-3))
def test_extinction_is_continuous_across_cell_edges(seed: int, delta: float) -> None:
    rng = np.random.default_rng(seed)
    grid = Grid(l=(50, 90, 4), b=(-10, 10, 3), d=np.sort(rng.uniform(20, 600, 7)), ghost_cells=2)
    rho = rng.lognormal(-7, 2, grid.shape)
    dmap = make_map(grid, rho, n_samples=4, seed=seed)
    q = DustMapQuery(dmap)
    edges = grid.d_edges[1:-1]
    l, b = grid.l_centers[1], grid.b_centers[2]
    for mode in ("mean", "samples"):
        below = q.query_lbd(l, b, edges - delta, mode=mode)
        above = q.query_lbd(l, b, edges + delta, mode=mode)
        at = q.query_lbd(l, b, edges, mode=mode)
        rho_max = (dmap.density_samples if mode == "samples" else rho)[..., 2, 1].max()
        # the jump over 2 delta is at most 2 delta times the largest density, plus rounding of A
        bound = 2 * delta * rho_max + 1e-14 * np.abs(at).max()
        assert np.all(np.abs(above - below) <= bound)
        assert np.all((below <= at + 1e-14 * np.abs(at).max()) & (at <= above + 1e-14 * np.abs(at).max()))


# ----- dustmaps conventions ---------------------------------------------------------------------------------
def test_query_gal_takes_kpc_like_dustmaps(uniform: PosteriorMap) -> None:
    q = DustMapQuery(uniform)
    # dustmaps.map_base.DustMap.query_gal: l, b in deg, d in kpc unless a Quantity
    assert q.query_gal(60.0, 2.0, 0.3) == pytest.approx(1.3e-3 * 300.0, rel=1e-12)
    assert q.query_gal(60.0 * u.deg, 2.0 * u.deg, 300.0 * u.pc) == pytest.approx(1.3e-3 * 300.0, rel=1e-12)
    np.testing.assert_allclose(
        q.query_gal([60, 61], [0, 1], [0.1, 0.2], mode="percentile", pct=[50]), [[0.13], [0.26]], rtol=1e-12
    )
    with pytest.raises(QueryError, match="distance"):
        q.query_gal(60.0, 2.0)


def test_bare_numbers_follow_one_rule(uniform: PosteriorMap, caplog: pytest.LogCaptureFixture) -> None:
    # the catalogue's units rule across the query API: a Quantity is converted whatever its unit; bare numbers
    # get the documented unit (query_lbd pc, query_gal kpc as in dustmaps) and a warning when all of them look like
    # the other unit. Before, query_lbd read 0.3 * u.kpc as 0.3 pc without a word.
    q = DustMapQuery(uniform)
    expected = 1.3e-3 * 300.0
    assert q.query_lbd(60.0, 2.0, 0.3 * u.kpc) == pytest.approx(expected, rel=1e-12)
    assert q.query_lbd(60.0 * u.deg, 2.0 * u.deg, 300.0 * u.pc) == pytest.approx(expected, rel=1e-12)
    assert q.query_lbd(np.radians(60.0) * u.rad, 2.0, 300.0) == pytest.approx(expected, rel=1e-12)
    with caplog.at_level("WARNING", logger="dustgp.query"):
        assert q.query_lbd(60.0, 2.0, 300.0) == pytest.approx(expected, rel=1e-12)
        assert q.query_gal(60.0, 2.0, 0.3) == pytest.approx(expected, rel=1e-12)
        assert not caplog.records  # plausible bare numbers: no warning
        q.query_lbd([60.0, 61.0], [2.0, 2.0], [0.3, 0.4])
        q.query_gal(60.0, 2.0, 300.0)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "query_lbd" in messages[0]
    assert "look like kpc" in messages[0]
    assert "query_gal" in messages[1]
    assert "look like pc" in messages[1]


def test_distances_are_quantities(uniform: PosteriorMap) -> None:
    q = DustMapQuery(uniform)
    assert q.distances.unit == u.pc
    assert q.distance_bounds.unit == u.pc
    np.testing.assert_array_equal(q.distance_bounds.value, uniform.grid.d_edges)
    np.testing.assert_array_equal(q.distances.value, uniform.grid.d_centers)
    np.testing.assert_array_equal(uniform.distances.value, uniform.grid.d_centers)
    np.testing.assert_array_equal(uniform.distance_bounds.to_value(u.pc), uniform.grid.d_edges)


def test_dustmap_methods(uniform: PosteriorMap) -> None:
    c = galactic([60, 70], [0, 1], [300, 400])
    expected = DustMapQuery(uniform).query(c)
    np.testing.assert_array_equal(uniform.query(c), expected)
    np.testing.assert_array_equal(uniform(c), expected)
    np.testing.assert_array_equal(uniform.query_gal([60, 70], [0, 1], [0.3, 0.4]), expected)
    engine = uniform._query_engine()
    assert uniform._query_engine() is engine  # tables are kept between calls ...
    uniform.extinction_mean = 2 * uniform.extinction_mean
    assert uniform._query_engine() is not engine  # ... until an array is replaced
    np.testing.assert_allclose(uniform.query(c), 2 * expected, rtol=1e-12)


def test_maps_keep_a_modest_number_of_samples_by_default() -> None:
    assert keep_samples_for(None, 200) == DEFAULT_KEEP_SAMPLES == 12
    assert keep_samples_for(None, 5) == 5  # never more than were drawn
    assert keep_samples_for(0, 200) == 0  # asked for none
