"""Parallaxes through the catalogue and the likelihood: a parallax with its error is a distance posterior under the
exponentially decreasing space density prior (dustgp.catalog.distances), never 1/parallax.

The catalogue read from parallax columns keeps its parallaxes (negative ones included), takes the posterior's median
as its distance, writes and reads them back, and the fit and the held-out checks average over the parallax nodes.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
import torch
from astropy.table import Table

from catalog_tables import SEED, make_table
from dustgp.catalog import Catalog, CatalogError, lognormal_nodes, parallax_distance_percentiles, parallax_nodes
from dustgp.config import ConfigError, load_config
from dustgp.fitting import FitConfig
from dustgp.fitting.stars import star_likelihood
from dustgp.grid import Grid
from dustgp.likelihood import StarNodes
from dustgp.sightlines import Sightlines
from dustgp.validation import holdout_report
from known_maps import make_map


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def _parallax_table(rng: np.random.Generator, n: int = 50) -> Table:
    """:func:`make_table` with parallax columns (mas): S/N from -3 to 30, zero and negative parallaxes included."""
    table = make_table(rng, n, units=False)
    table["plx_err"] = rng.uniform(0.05, 0.5, n) * u.mas
    table["plx"] = 1000.0 / np.asarray(table["distance"]) * u.mas + rng.normal(0.0, 1.0, n) * table["plx_err"]
    table["plx"][[2, 11]] = [0.0, -0.6] * u.mas
    return table


def test_negative_parallaxes_are_kept_at_the_median_of_their_posterior(rng):
    table = _parallax_table(rng)
    assert np.sum(np.asarray(table["plx"]) <= 0) >= 2
    catalog = Catalog.from_table(table, parallax="plx", parallax_err="plx_err", inflate=False)
    plx, err = np.asarray(table["plx"]), np.asarray(table["plx_err"])
    assert len(catalog) == len(table)
    assert catalog.dropped_rows.size == 0
    p16, p50, p84 = parallax_distance_percentiles(plx, err).T
    np.testing.assert_allclose(catalog.distance, p50, rtol=1e-12)
    np.testing.assert_allclose(catalog.distance_err, (p84 - p16) / 2, rtol=1e-12)
    np.testing.assert_array_equal(catalog.parallax, plx)
    np.testing.assert_array_equal(catalog.parallax_err, err)
    assert catalog.parallax_length_scale == 1350.0
    # not 1/parallax: a zero or negative parallax lies beyond where the prior alone puts it (mode 2 L)
    assert np.all(catalog.distance[[2, 11]] > 2.0 * 1350.0)
    # another prior moves the distances, and the catalogue keeps its L
    near = Catalog.from_table(table, parallax="plx", parallax_err="plx_err", parallax_length_scale=300.0)
    np.testing.assert_allclose(near.distance, parallax_distance_percentiles(plx, err, (50,), length_scale=300.0)[:, 0])
    assert near.parallax_length_scale == 300.0
    assert np.all(near.distance[[2, 11]] < catalog.distance[[2, 11]])
    with pytest.raises(CatalogError, match=r"parallax_length_scale: expected a finite value > 0 pc"):
        Catalog.from_table(table, parallax="plx", parallax_err="plx_err", parallax_length_scale=0.0)


@pytest.mark.parametrize("bad", [0.0, -0.1])
def test_parallax_err_not_positive_is_a_bad_row_naming_the_column(rng, bad):
    table = _parallax_table(rng)
    table["plx_err"][[4, 9]] = bad
    with pytest.raises(CatalogError, match=r"column 'plx_err': expected parallax uncertainty > 0 mas, .* 2 rows: 4, 9"):
        Catalog.from_table(table, parallax="plx", parallax_err="plx_err")
    dropped = Catalog.from_table(table, parallax="plx", parallax_err="plx_err", on_bad="drop")
    np.testing.assert_array_equal(dropped.dropped_rows, [4, 9])


def test_a_sentinel_parallax_is_a_bad_row(rng):
    table = _parallax_table(rng)
    table["plx"][6] = -9999.0
    with pytest.raises(CatalogError, match=r"column 'plx': expected \|parallax\| <= 1000 mas .* 1 row: 6$"):
        Catalog.from_table(table, parallax="plx", parallax_err="plx_err")


def test_core_constructor_checks_the_parallaxes():
    args = ([10.0, 20.0], [0.0, 1.0], [100.0, 200.0], [0.1, 0.2], [0.1, 0.1])
    with pytest.raises(CatalogError, match=r"column parallax_err: expected parallax_err > 0 mas.* 1 row: 1"):
        Catalog(*args, parallax=[10.0, -1.0], parallax_err=[0.5, 0.0])
    with pytest.raises(CatalogError, match=r"column parallax: expected finite values.* 1 row: 0"):
        Catalog(*args, parallax=[np.nan, 5.0], parallax_err=[0.5, 0.5])
    with pytest.raises(CatalogError, match="give both or neither"):
        Catalog(*args, parallax=[10.0, 5.0])
    with pytest.raises(CatalogError, match="parallax_length_scale"):
        Catalog(*args, parallax=[10.0, 5.0], parallax_err=[0.5, 0.5], parallax_length_scale=np.inf)


def test_to_table_and_back_keeps_the_parallaxes(rng, tmp_path):
    table = _parallax_table(rng)
    catalog = Catalog.from_table(table, parallax="plx", parallax_err="plx_err", parallax_length_scale=800.0)
    out = catalog.to_table()
    assert out["parallax"].unit == u.mas
    assert out["parallax_err"].unit == u.mas
    assert out.meta["parallax_length_scale"] == 800.0
    path = tmp_path / "stars.ecsv"
    out.write(path)
    for written in (out, Table.read(path)):
        again = Catalog.from_table(
            written,
            parallax="parallax",
            parallax_err="parallax_err",
            parallax_length_scale=written.meta["parallax_length_scale"],
        )
        for name in ("parallax", "parallax_err", "distance", "distance_err", "extinction_err", "l", "b"):
            np.testing.assert_allclose(getattr(again, name), getattr(catalog, name), rtol=1e-12, err_msg=name)
        assert again.parallax_length_scale == 800.0
    # without parallaxes the table has no parallax columns
    assert "parallax" not in Catalog.from_table(table, distance_err="distance_err").to_table().colnames


def test_subsets_and_inflation_keep_the_parallaxes(rng):
    catalog = Catalog.from_table(
        _parallax_table(rng), parallax="plx", parallax_err="plx_err", parallax_length_scale=900.0
    )
    assert np.any(catalog.inflation > 0)  # folded in by default, from the posterior's width
    subset = catalog.select([7, 3])
    np.testing.assert_array_equal(subset.parallax, catalog.parallax[[7, 3]])
    np.testing.assert_array_equal(subset.parallax_err, catalog.parallax_err[[7, 3]])
    assert subset.parallax_length_scale == 900.0
    kept, held_out = catalog.split(0.5, seed=1)
    assert len(kept.parallax) + len(held_out.parallax) == len(catalog)
    reinflated = catalog.inflate_for_distance(1e-3)
    np.testing.assert_array_equal(reinflated.parallax, catalog.parallax)
    assert reinflated.parallax_length_scale == 900.0
    assert not catalog.parallax.flags.writeable
    assert "distances from parallaxes" in repr(catalog)
    assert "from parallaxes" in catalog.summary()
    assert "L = 900 pc" in catalog.summary()


def test_distance_nodes_are_the_parallax_nodes(rng):
    catalog = Catalog.from_table(_parallax_table(rng), parallax="plx", parallax_err="plx_err", inflate=False)
    nodes, log_w = catalog.distance_nodes(6)
    expected, expected_w = parallax_nodes(catalog.parallax, catalog.parallax_err, 6)
    np.testing.assert_array_equal(nodes, expected)
    np.testing.assert_array_equal(log_w, expected_w)
    # not the log-normal nodes of the same median and width
    assert not np.allclose(nodes, lognormal_nodes(catalog.distance, catalog.distance_err, 6)[0], rtol=1e-3)
    plain = Catalog.from_table(make_table(rng, units=False), distance_err="distance_err")
    np.testing.assert_array_equal(plain.distance_nodes(4)[0], lognormal_nodes(plain.distance, plain.distance_err, 4)[0])
    with pytest.raises(CatalogError, match="neither parallaxes nor distance_err"):
        Catalog.from_table(make_table(rng, units=False)).distance_nodes(4)


def test_the_fit_averages_over_the_parallax_nodes():
    rng = np.random.default_rng(3)
    n = 200
    d_true = rng.uniform(150.0, 450.0, n)
    err = rng.uniform(0.1, 0.8, n)
    plx = 1000.0 / d_true + err * rng.standard_normal(n)
    table = Table({"l": rng.uniform(60.0, 70.0, n), "b": rng.uniform(-4.0, 4.0, n), "A0": 1e-3 * d_true})
    table["A0_err"], table["plx"], table["plx_err"] = 0.05, plx, err
    catalog = Catalog.from_table(table, parallax="plx", parallax_err="plx_err", inflate=False)
    grid = Grid(l=(60, 70, 5), b=(-4, 4, 4), d=(100, 3000, 20), ghost_cells=1)
    sightlines = Sightlines.from_positions(grid, catalog.l, catalog.b, catalog.distance)
    on_grid = catalog.select(sightlines.star_index)
    config = FitConfig(distance_nodes=8, distance_uncertainty="quadrature")
    likelihood = star_likelihood(on_grid, sightlines, config, dtype=torch.float64, device=torch.device("cpu"))
    expected = StarNodes.build(grid, on_grid.l, on_grid.b, *parallax_nodes(on_grid.parallax, on_grid.parallax_err, 8))
    got = likelihood.nodes
    assert len(got) > 0.5 * len(on_grid) * 8  # most nodes lie on the grid; those that do not are dropped the same
    np.testing.assert_array_equal(got.star, expected.star)
    np.testing.assert_array_equal(got.log_prior, expected.log_prior)
    for name in ("column", "cell", "fraction", "star_index"):
        np.testing.assert_array_equal(getattr(got.sightlines, name), getattr(expected.sightlines, name), err_msg=name)


def test_held_out_stars_are_averaged_over_their_parallax_nodes():
    # constant 1e-3 mag/pc from the Sun: the map's mean extinction at d is 1e-3 d and its std 0.2 x that (make_map)
    grid = Grid(l=(60, 70, 5), b=(-4, 4, 4), d=(100, 500, 8), ghost_cells=1)
    plx, err = np.array([4.0, 5.0, 3.0, 4.5]), np.array([0.2, 0.3, 0.15, 0.25])  # S/N 15-20: nodes within the map
    sigma = 0.05
    held_out = Catalog.from_table(
        Table({"l": [62.0, 64.0, 66.0, 68.0], "b": [0.0, 1.0, -1.0, 2.0], "A0": 1e-3 * 1000.0 / plx + 0.1,
               "A0_err": np.full(4, sigma), "plx": plx, "plx_err": err}),
        parallax="plx", parallax_err="plx_err", inflate=False,
    )  # fmt: skip
    report = holdout_report(make_map(grid, 1e-3), held_out, distance_nodes=8)
    nodes, _ = parallax_nodes(plx, err, 8)
    assert np.all((nodes > 100.0) & (nodes < 500.0))
    a_k = 1e-3 * nodes
    mean = a_k.mean(axis=1)
    variance = sigma**2 + np.mean((0.2 * a_k) ** 2 + a_k**2, axis=1) - mean**2
    residual = held_out.extinction - mean
    assert report.n_stars == 4
    assert report.distance_nodes == 8
    assert report.median_residual == pytest.approx(np.median(residual), rel=1e-9)
    assert report.reduced_chi2 == pytest.approx(np.mean(residual**2 / variance), rel=1e-9)


def test_a_run_file_reads_parallax_columns_with_its_prior(rng, tmp_path):
    _parallax_table(rng).write(tmp_path / "stars.ecsv")
    run = tmp_path / "run.toml"
    run.write_text(
        '[catalog]\npath = "stars.ecsv"\nparallax = "plx"\nparallax_err = "plx_err"\nparallax_length_scale = 500\n'
        "[grid]\nl = [0, 360, 4]\nb = [-30, 30, 4]\nd = [100, 3000, 8]\n"
    )
    options = dict(load_config(run).catalog or {})
    catalog = Catalog.read(options.pop("path"), **options)
    assert catalog.parallax_length_scale == 500.0
    np.testing.assert_allclose(
        catalog.distance,
        parallax_distance_percentiles(catalog.parallax, catalog.parallax_err, (50,), length_scale=500.0)[:, 0],
    )
    run.write_text(run.read_text().replace("parallax_length_scale = 500", 'parallax_length_scale = "500"'))
    with pytest.raises(ConfigError, match=r"\[catalog\] parallax_length_scale: expected a number"):
        load_config(run)


def test_from_arrays_takes_parallaxes_as_the_table_readers_do(rng):
    table = _parallax_table(rng)
    expected = Catalog.from_table(table, parallax="plx", parallax_err="plx_err", parallax_length_scale=700.0)
    plx, err = np.asarray(table["plx"]), np.asarray(table["plx_err"])
    arrays = (table["l"], table["b"], None, table["A0"], table["A0_err"])
    for given in ((plx, err), (plx * u.mas, (err * u.mas).to(u.uarcsec))):  # bare mas, or any angle unit
        catalog = Catalog.from_arrays(*arrays, parallax=given[0], parallax_err=given[1], parallax_length_scale=700.0)
        for name in ("distance", "distance_err", "parallax", "parallax_err", "extinction_err", "inflation"):
            np.testing.assert_allclose(getattr(catalog, name), getattr(expected, name), rtol=1e-12, err_msg=name)
        assert catalog.parallax_length_scale == 700.0
        np.testing.assert_allclose(catalog.distance_nodes(8)[0], expected.distance_nodes(8)[0], rtol=1e-12)
    # a parallax alone is 1000 / parallax, with no uncertainty
    alone = Catalog.from_arrays(*arrays, parallax=np.abs(plx) + 1.0)
    np.testing.assert_allclose(alone.distance, 1000.0 / (np.abs(plx) + 1.0))
    assert alone.distance_err is None
    assert alone.parallax is None


def test_from_arrays_refuses_parallaxes_as_the_table_readers_do(rng):
    table = _parallax_table(rng)
    l, b, a, sigma = table["l"], table["b"], table["A0"], table["A0_err"]
    d = np.full(len(table), 300.0)
    plx, err = np.asarray(table["plx"]), np.asarray(table["plx_err"])
    with pytest.raises(CatalogError, match=r"distance, parallax: expected one of them .* got both"):
        Catalog.from_arrays(l, b, d, a, sigma, parallax=plx, parallax_err=err)
    with pytest.raises(CatalogError, match=r"distance, parallax: expected one of them .* got neither"):
        Catalog.from_arrays(l, b, None, a, sigma)
    with pytest.raises(CatalogError, match="parallax_err given without parallax"):
        Catalog.from_arrays(l, b, d, a, sigma, parallax_err=err)
    with pytest.raises(CatalogError, match="give either distance_err or parallax/parallax_err, not both"):
        Catalog.from_arrays(l, b, None, a, sigma, distance_err=d, parallax=plx, parallax_err=err)
    with pytest.raises(CatalogError, match=r"parallax_length_scale: expected a finite value > 0 pc, got -1"):
        Catalog.from_arrays(l, b, None, a, sigma, parallax=plx, parallax_err=err, parallax_length_scale=-1)
    bad = err.copy()
    bad[[4, 9]] = 0.0
    with pytest.raises(CatalogError, match=r"column 'parallax_err': expected parallax uncertainty > 0 mas, .* 4, 9"):
        Catalog.from_arrays(l, b, None, a, sigma, parallax=plx, parallax_err=bad)
    dropped = Catalog.from_arrays(l, b, None, a, sigma, parallax=plx, parallax_err=bad, on_bad="drop")
    np.testing.assert_array_equal(dropped.dropped_rows, [4, 9])
    assert len(dropped.distance_nodes(8)[0]) == len(table) - 2
    with pytest.raises(CatalogError, match=r"column 'parallax': unit 'pc' found, expected a unit convertible to mas"):
        Catalog.from_arrays(l, b, None, a, sigma, parallax=plx * u.pc, parallax_err=err)
    with pytest.raises(CatalogError, match="expected arrays of one length"):
        Catalog.from_arrays(l, b, None, a, sigma, parallax=plx[:-1], parallax_err=err[:-1])


def test_catalog_for_grid_passes_its_prior_to_the_parallax_posteriors(monkeypatch):
    from dustgp.catalog import Region, catalog_for_grid, gaia
    from dustgp.config import gaia_catalog_keys
    from gaia_fakes import fake_stars

    grid = Grid(l=(181, 189, 8), b=(-24, -21, 3), d=(263.0, 520.0, 10), ghost_cells=1)
    stars = fake_stars(Region.from_grid(grid), 60)
    asked = []

    def fetched(region, **options):
        asked.append(options["distance_from"])
        return stars

    monkeypatch.setattr(gaia, "fetch_gaia_table", fetched)
    catalog = catalog_for_grid(grid, distance_from="parallax", parallax_length_scale=400.0, inflate=False)
    assert asked == ["parallax"]
    assert catalog.parallax_length_scale == 400.0
    plx, err = np.asarray(stars["parallax"], float), np.asarray(stars["parallax_error"], float)
    np.testing.assert_allclose(
        catalog.distance, parallax_distance_percentiles(plx, err, (50,), length_scale=400.0)[:, 0]
    )
    # a bad prior is refused before anything is fetched, naming the option; and a run file may set it
    with pytest.raises(CatalogError, match=r"parallax_length_scale: expected a finite value > 0 pc, got 0.0"):
        catalog_for_grid(grid, distance_from="parallax", parallax_length_scale=0.0)
    assert asked == ["parallax"]
    assert gaia_catalog_keys()["parallax_length_scale"] is float
