"""Tests of dustgp.catalog.distances: equal-mass nodes of log-normal and parallax distance posteriors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from dustgp.catalog import (
    Catalog,
    CatalogError,
    lognormal_nodes,
    parallax_distance_percentiles,
    parallax_nodes,
    volume_prior_posterior,
)
from dustgp.grid import Grid
from dustgp.simulate import simulate


def test_lognormal_nodes_put_the_16_84_interval_at_two_sigma() -> None:
    nodes, log_w = lognormal_nodes(np.array([200.0]), np.array([30.0]), 100)
    assert np.exp(log_w[0]).sum() == pytest.approx(1.0)
    assert np.all(np.diff(nodes[0]) > 0)
    # the nodes are equal-mass quantiles: their 16th and 84th percentiles are 2 sigma_d apart
    lo, hi = np.percentile(nodes[0], [16, 84])
    assert hi - lo == pytest.approx(60.0, rel=0.02)
    assert np.median(nodes[0]) == pytest.approx(200.0, rel=1e-3)


def test_parallax_nodes_follow_the_posterior_quantiles() -> None:
    plx, err, length = np.array([4.0, 1.0]), np.array([0.4, 0.5]), 1350.0
    nodes, log_w = parallax_nodes(plx, err, 8, length_scale=length)
    assert np.allclose(np.exp(log_w).sum(axis=1), 1.0)
    for i in range(2):
        post = lambda d, i=i: d * d * math.exp(-d / length) * stats.norm.pdf(plx[i], 1000.0 / d, err[i])  # noqa: E731
        total, _ = integrate.quad(post, 1.0, 30_000.0, limit=500, points=[1000 / plx[i]])
        below, _ = integrate.quad(post, 1.0, nodes[i, 3], limit=500)
        # the 4th of 8 nodes is the median of the 4th eighth: the mass below it is 7/16 (table resolution ~1%)
        assert below / total == pytest.approx(7 / 16, abs=0.01)


def _brute_force_percentiles(plx: float, err: float, q: list[float], length: float) -> np.ndarray:
    """Quantiles q (pc) of d² exp(-d/L) N(plx; 1000/d, err²), by the trapezoid rule on 4 million points of d
    from 0 to 60 L (steps of L / 67 000: a thousandth of the narrowest posterior below)."""
    d = np.linspace(0.0, 60.0 * length, 4_000_001)[1:]
    log_post = 2.0 * np.log(d) - d / length - 0.5 * ((plx - 1000.0 / d) / err) ** 2
    post = np.exp(log_post - log_post.max())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (post[1:] + post[:-1]))])
    return np.interp(q, cdf / cdf[-1], d)


@pytest.mark.parametrize(
    ("plx", "err", "length"),
    [
        (4.0, 0.4, 1350.0),  # S/N 10
        (1.0, 0.5, 1350.0),  # S/N 2: the prior matters
        (0.3, 1.0, 1350.0),  # the prior nearly alone
        (0.0, 0.5, 1350.0),
        (-0.5, 0.5, 1350.0),  # negative: a proper posterior beyond the prior's mode
        (-3.0, 0.3, 1350.0),  # S/N -10
        (2.0, 0.5, 400.0),  # another prior
    ],
)
def test_parallax_percentiles_match_the_brute_force_posterior(plx, err, length) -> None:
    found = parallax_distance_percentiles(np.array([plx]), np.array([err]), (16, 50, 84), length_scale=length)[0]
    expected = _brute_force_percentiles(plx, err, [0.16, 0.5, 0.84], length)
    # the table (512 points in ln d) reads percentiles to ~1e-4 of the distance (measured: <= 1.0e-4)
    np.testing.assert_allclose(found, expected, rtol=2e-4)
    nodes, _ = parallax_nodes(np.array([plx]), np.array([err]), 2, length_scale=length)
    np.testing.assert_allclose(nodes[0], parallax_distance_percentiles([plx], [err], (25, 75), length_scale=length)[0])


@pytest.mark.parametrize("plx", [2.0, 10.0])
@pytest.mark.parametrize("snr", [20.0, 50.0])
def test_parallax_median_tends_to_the_inverse_parallax_at_high_snr(plx, snr) -> None:
    # In x = 1000/d (mas) the posterior is x⁻⁴ exp(-a/x) N(plx; x, σ²), a = 1000/L. With x = plx (1 + ε t), ε = σ/plx,
    # the prior's log has slopes β1 ε, β2 ε², β3 ε³ in t (β1 = a/plx - 4, β2 = 4 - 2a/plx, β3 = 6a/plx - 8): the
    # Gaussian's median moves by β1 ε (1 + β2 ε²) and the cubic term adds β3 ε³ / 3, so
    # x_med / plx = 1 + β1 ε² + γ ε⁴ + O(ε⁶), γ = β1 β2 + β3 / 3, |γ| < 18.7 for plx >= 2 mas. At S/N >= 20 the
    # O(ε⁶) term is below 0.5 ε⁴ (-176 ε⁶, mpmath): |x_med / plx - 1 - β1 ε²| <= 20 ε⁴.
    err, eps, a = plx / snr, 1.0 / snr, 1000.0 / 1350.0
    median = parallax_distance_percentiles(np.array([plx]), np.array([err]), (50,))[0, 0]
    assert abs(1000.0 / median / plx - 1.0 - (a / plx - 4.0) * eps**2) <= 20.0 * eps**4
    # and so d_med -> 1000 / plx, off by (4 - a/plx) ε² < 4 ε² relative
    assert 0.0 < median * plx / 1000.0 - 1.0 < 4.0 * eps**2 * (1.0 + 5.0 * eps**2)


def test_parallax_posterior_checks_its_input() -> None:
    with pytest.raises(ValueError, match="parallax_err > 0"):
        parallax_nodes(np.array([1.0, 2.0]), np.array([0.1, 0.0]), 4)
    with pytest.raises(ValueError, match="finite"):
        parallax_distance_percentiles(np.array([np.nan]), np.array([0.1]))
    with pytest.raises(ValueError, match=r"q: expected percentiles in \(0, 100\)"):
        parallax_distance_percentiles(np.array([1.0]), np.array([0.1]), (0, 50))
    with pytest.raises(ValueError, match="length_scale"):
        parallax_nodes(np.array([1.0]), np.array([0.1]), 4, length_scale=-1.0)


def test_parallax_tables_in_chunks_agree() -> None:
    rng = np.random.default_rng(5)
    plx, err = rng.normal(1.0, 2.0, 300), rng.uniform(0.02, 1.0, 300)
    whole = parallax_distance_percentiles(plx, err, chunk=1000)
    np.testing.assert_array_equal(parallax_distance_percentiles(plx, err, chunk=7), whole)
    assert np.all(np.diff(whole, axis=1) > 0)


# ---- distances that are measurements ---------------------------------------------------------------------------


def test_the_volume_prior_posterior_is_the_closed_form_and_reads_back_as_itself() -> None:
    d, sigma = np.array([300.0, 450.0]), np.array([30.0, 90.0])
    median, half_width = volume_prior_posterior(d, sigma)
    s = np.arcsinh(sigma / d)
    # brute force: the posterior in u = ln d is e^{3u} N(u; ln d_obs, s²); its median, on a fine grid
    for i in range(2):
        u = np.linspace(math.log(d[i]) - 12 * s[i], math.log(d[i]) + 12 * s[i], 200_001)
        density = np.exp(3.0 * u) * stats.norm.pdf(u, math.log(d[i]), s[i])
        cdf = integrate.cumulative_trapezoid(density, u, initial=0.0)
        assert math.exp(np.interp(0.5, cdf / cdf[-1], u)) == pytest.approx(median[i], rel=1e-6)
    # lognormal_nodes reads (median, half_width) as the same log-normal: width s, centred on the median
    nodes, _ = lognormal_nodes(median, half_width, 8)
    np.testing.assert_allclose(nodes, lognormal_nodes(d, sigma, 8)[0] * np.exp(3 * s**2)[:, None], rtol=1e-12)


def test_the_volume_prior_centres_a_simulated_catalogue_on_its_true_distances() -> None:
    """Stars uniform in volume with log-normal distance errors: among stars catalogued well inside the region, the
    raw catalogue distance exceeds the true one too often (they are truly farther: Malmquist), the volume-prior
    posterior median half the time, and its 16-84% interval holds the truth 68% of the time."""
    region = Grid(l=(60, 70, 4), b=(-5, 5, 4), d=(180, 500, 8), ghost_cells=0)
    sky = simulate(region, n_stars=40_000, n_clumps=1, distance_errors=(0.05, 0.1), seed=3)
    raw = sky.catalog
    # catalogued 250-350 pc: 3 sigma of 10% either way stays inside 180-500 pc, so the region's edges do not matter
    inner = (raw.distance > 250) & (raw.distance < 350)
    n = int(inner.sum())
    corrected = raw.with_volume_prior()
    se = 0.5 / math.sqrt(n)  # standard error of a share near 1/2
    truth = sky.true_distance[inner]
    assert np.mean(truth < corrected.distance[inner]) == pytest.approx(0.5, abs=5 * se)
    # the bias the prior removes: Phi(-3 f) ~ 0.41 expected at f ~ 0.075, some 17 standard errors below 1/2
    assert np.mean(truth < raw.distance[inner]) < 0.5 - 10 * se
    lo = corrected.distance[inner] * np.exp(-np.arcsinh(corrected.distance_err[inner] / corrected.distance[inner]))
    hi = corrected.distance[inner] ** 2 / lo
    p = stats.norm.cdf(1) - stats.norm.cdf(-1)
    assert np.mean((truth > lo) & (truth < hi)) == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / n))
    assert len(corrected) == len(raw)
    np.testing.assert_array_equal(raw.distance, sky.catalog.distance)  # the catalogue itself is unchanged


def test_the_volume_prior_needs_distance_measurements() -> None:
    plain = Catalog.from_arrays([65.0], [0.0], [300.0], [0.3], [0.05])
    with pytest.raises(CatalogError, match=r"with_volume_prior: expected distance uncertainties \(distance_err\)"):
        plain.with_volume_prior()


def test_measured_distances_are_read_as_volume_prior_posteriors(tmp_path) -> None:
    l, b, d, a, a_err, d_err = [65.0, 66.0], [0.0, 1.0], [300.0, 450.0], [0.3, 0.5], [0.05, 0.05], [30.0, 90.0]
    measured = Catalog.from_arrays(l, b, d, a, a_err, distance_err=d_err, distance_kind="measurement")
    posterior = Catalog.from_arrays(l, b, d, a, a_err, distance_err=d_err)
    median, half_width = volume_prior_posterior(np.array(d), np.array(d_err))
    np.testing.assert_allclose(measured.distance, median, rtol=1e-12)
    np.testing.assert_allclose(measured.distance_err, half_width, rtol=1e-12)
    np.testing.assert_array_equal(posterior.distance, d)  # the default reads distances as posteriors
    # the same through a file, as a run file's [catalog] distance_kind reads it
    Catalog.from_arrays(l, b, d, a, a_err, distance_err=d_err).to_table().write(tmp_path / "stars.ecsv")
    read = Catalog.read(tmp_path / "stars.ecsv", distance_err="distance_err", distance_kind="measurement")
    np.testing.assert_allclose(read.distance, median, rtol=1e-12)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {},
            r"distance_kind: 'measurement' expects distances with uncertainties \(distance_err\), got no distance_err",
        ),
        ({"distance_kind": "measured"}, r"distance_kind: expected 'posterior' or 'measurement', got 'measured'"),
    ],
)
def test_measured_distances_need_their_uncertainties(given, message) -> None:
    options = {"distance_kind": "measurement"} | given
    with pytest.raises(CatalogError, match=message):
        Catalog.from_arrays([65.0], [0.0], [300.0], [0.3], [0.05], **options)


def test_parallaxes_are_not_distance_measurements() -> None:
    with pytest.raises(CatalogError, match=r"distance_kind: 'measurement' expects .*, got parallaxes"):
        Catalog.from_arrays(
            [65.0], [0.0], None, [0.3], [0.05], parallax=[3.0], parallax_err=[0.3], distance_kind="measurement"
        )
