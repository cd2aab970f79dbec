"""The observation model (dustgp.simulate.observe): extinction noise with a floor, Gaia-like distance errors and
outliers, each from its own random stream so that switching one on leaves every other draw as it was."""

import numpy as np
from scipy import stats

from dustgp.simulate import simulate
from simulate_support import REGION

N = 20_000
#: Bounds on sample statistics: a deviation of more than 5 standard errors fails (one chance in ~3.5 million for a
#: Gaussian statistic; the draws are seeded, so a pass is reproducible).
Z = 5.0


def _sky(**options):
    return simulate(REGION, n_stars=N, n_clumps=2, seed=7, **options)


def test_the_options_leave_the_clean_twin_as_it_was() -> None:
    """Distance errors and outliers come from their own streams: same stars, truth and noise as without them."""
    twin = _sky()
    real = _sky(distance_errors=(0.05, 0.2), outlier_fraction=0.03)
    only_outliers = _sky(outlier_fraction=0.03)
    np.testing.assert_array_equal(real.catalog.l, twin.catalog.l)
    np.testing.assert_array_equal(real.catalog.b, twin.catalog.b)
    np.testing.assert_array_equal(real.true_distance, twin.catalog.distance)
    np.testing.assert_array_equal(real.true_extinction, twin.true_extinction)
    np.testing.assert_array_equal(real.catalog.extinction_err, twin.catalog.extinction_err)
    np.testing.assert_array_equal(real.catalog.extinction[~real.outlier], twin.catalog.extinction[~real.outlier])
    # (a + x) - x may differ from a in the last bit
    np.testing.assert_allclose(real.catalog.extinction - real.outlier_offset, twin.catalog.extinction, rtol=1e-14)
    # switching distance errors on does not move the outliers
    np.testing.assert_array_equal(real.outlier, only_outliers.outlier)
    np.testing.assert_array_equal(real.outlier_offset, only_outliers.outlier_offset)


# ---- distance errors ------------------------------------------------------------------------------------------


def test_distance_errors_are_log_normal_with_the_reported_width() -> None:
    f_lo, f_hi = 0.05, 0.2
    sky = _sky(distance_errors=(f_lo, f_hi))
    cat = sky.catalog
    frac = cat.distance_err / cat.distance  # reported: distance_err = f d_obs
    assert frac.min() >= f_lo
    assert frac.max() <= f_hi * (1 + 1e-12)
    # log-uniform: ln f uniform on [ln f_lo, ln f_hi]
    u = (np.log(frac) - np.log(f_lo)) / np.log(f_hi / f_lo)
    assert stats.kstest(u, "uniform").statistic < Z / np.sqrt(N) / 2  # Kolmogorov: sqrt(N) D ~ O(1)
    # ln(d_obs / d_true) / f ~ N(0, 1)
    z = np.log(cat.distance / sky.true_distance) / frac
    assert abs(z.mean()) < Z / np.sqrt(N)
    assert abs(z.std() - 1.0) < Z / np.sqrt(2 * N)
    assert stats.kstest(z, "norm").statistic < Z / np.sqrt(N) / 2
    # the reported 16/84 percentiles hold the true distance 68.27% of the time, and are d_obs exp(-+f)
    np.testing.assert_allclose(sky.distance_lower, cat.distance * np.exp(-frac), rtol=1e-12)
    np.testing.assert_allclose(sky.distance_upper, cat.distance * np.exp(frac), rtol=1e-12)
    inside = np.mean((sky.true_distance >= sky.distance_lower) & (sky.true_distance <= sky.distance_upper))
    p = stats.norm.cdf(1) - stats.norm.cdf(-1)
    assert abs(inside - p) < Z * np.sqrt(p * (1 - p) / N)
    # stars scattered off the region stay in the catalogue
    assert len(cat) == N
    assert (cat.distance > REGION.d_max).any()
    assert (cat.distance < REGION.d_min).any()
    # not inflated: that is the fit's choice
    assert not cat.inflation.any()


def test_distance_errors_can_grow_with_distance() -> None:
    f_lo, f_hi = 0.05, 0.2
    sky = _sky(distance_errors=(f_lo, f_hi), distance_error_model="distance")
    frac = sky.catalog.distance_err / sky.catalog.distance
    t = (sky.true_distance - REGION.d_min) / (REGION.d_max - REGION.d_min)
    np.testing.assert_allclose(frac, f_lo * (f_hi / f_lo) ** t, rtol=1e-12)
    z = np.log(sky.catalog.distance / sky.true_distance) / frac
    assert abs(z.std() - 1.0) < Z / np.sqrt(2 * N)


# ---- outliers and the error model -----------------------------------------------------------------------------


def test_outliers_have_the_asked_fraction_and_amplitudes() -> None:
    lo, hi = 0.3, 1.5
    sky = _sky(outlier_fraction=0.03, outlier_amplitude=(lo, hi))
    assert sky.outlier.sum() == round(0.03 * N)
    shift = sky.outlier_offset[sky.outlier]
    assert shift.min() >= lo
    assert shift.max() <= hi
    assert not sky.outlier_offset[~sky.outlier].any()
    # uniform on [lo, hi]: mean (lo + hi) / 2, standard error (hi - lo) / sqrt(12 n)
    assert abs(shift.mean() - 0.5 * (lo + hi)) < Z * (hi - lo) / np.sqrt(12 * shift.size)
    # their quoted sigma is unchanged and their normalised residuals sit far out
    np.testing.assert_allclose(sky.catalog.extinction_err, 0.1 * sky.true_extinction, rtol=1e-12)
    residual = (sky.catalog.extinction - sky.true_extinction) / sky.catalog.extinction_err
    assert np.median(residual[sky.outlier]) > 3.0
    assert abs(np.median(residual[~sky.outlier])) < Z * 1.2533 / np.sqrt(N)  # sd of a median: sqrt(pi/2)/sqrt(n)


def test_the_error_floor_adds_in_quadrature() -> None:
    floor, fraction = 0.05, 0.05
    sky = _sky(noise=fraction, noise_floor=floor)
    sigma = sky.catalog.extinction_err
    np.testing.assert_allclose(sigma, np.sqrt(floor**2 + (fraction * sky.true_extinction) ** 2), rtol=1e-12)
    assert sigma.min() >= floor
    z = (sky.catalog.extinction - sky.true_extinction) / sigma
    assert abs(z.mean()) < Z / np.sqrt(N)
    assert abs(z.std() - 1.0) < Z / np.sqrt(2 * N)
    floor_only = _sky(noise=0.0, noise_floor=floor)
    np.testing.assert_array_equal(floor_only.catalog.extinction_err, floor)
