"""Masses from extinction (paper Eq. 9): known values for a slab and a sphere, sample spreads, boxes."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest

from dustgp.grid import Grid, lbd_to_xyz
from dustgp.mass import GAS_TO_DUST, KAPPA_V, dust_mass, pixel_mask, total_mass
from dustgp.posterior_map import PosteriorMap

LEVELS = (16.0, 50.0, 84.0)
TAU_PER_MAG = np.log(10.0) / 2.5  # A = 1.086 tau


def exact_map(grid: Grid, rho: np.ndarray, samples: np.ndarray | None = None) -> PosteriorMap:
    """A map whose every stored summary is the known density (and its integral)."""
    ext = np.cumsum(rho * grid.path_lengths[:, None, None], axis=0)
    return PosteriorMap(
        grid=grid,
        percentiles=np.array(LEVELS),
        density_mean=rho,
        density_std=0 * rho,
        density_percentiles=np.stack([rho] * 3),
        extinction_mean=ext,
        extinction_std=0 * ext,
        extinction_percentiles=np.stack([ext] * 3),
        density_samples=samples,
    )


def eq9(distance: u.Quantity, extinction_mag: float, solid_angle_sr: float) -> u.Quantity:
    """Paper Eq. 9 for a uniform column: M = D^2 / kappa * tau * Omega."""
    return (distance**2 / KAPPA_V * TAU_PER_MAG * extinction_mag * solid_angle_sr).to(u.M_sun)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture
def slab_grid() -> Grid:
    return Grid(l=(40, 60, 20), b=(-5, 5, 10), d=(100, 400, 30), ghost_cells=2)


@pytest.fixture
def slab(slab_grid: Grid) -> PosteriorMap:
    # rho0 = 2e-3 mag/pc in 200..300 pc (exactly ten 10-pc cells), zero elsewhere: A = 0.2 mag past 300 pc
    rho = np.zeros(slab_grid.shape)
    rho[(slab_grid.d_centers > 200) & (slab_grid.d_centers < 300)] = 2e-3
    return exact_map(slab_grid, rho)


def test_kappa_is_draine_2003() -> None:
    # Draine 2003 (ARA&A 41, 241): absorption 8.5e3 cm^2/g at 547 nm, albedo 0.67 -> extinction 2.6e4 cm^2/g
    assert KAPPA_V.to_value(u.cm**2 / u.g) == pytest.approx(8.5e3 / (1 - 0.67), rel=0.01)
    assert GAS_TO_DUST == 124.0  # Dharmawardena et al. 2022, Sect. 7


def test_uniform_slab(slab: PosteriorMap) -> None:
    # By hand: every pixel has A = 2e-3 mag/pc * 100 pc = 0.2 mag to d_max = 400 pc, and the whole box
    # subtends Omega = (20 deg in rad) * (sin 5 deg - sin -5 deg) sr.
    omega = np.radians(20.0) * 2 * np.sin(np.radians(5.0))
    expected = eq9(400 * u.pc, 0.2, omega)
    mass = dust_mass(slab)
    assert mass.method == "percentiles"
    assert mass.mass.unit == u.M_sun
    np.testing.assert_allclose(mass.mass.to_value(u.M_sun), expected.value, rtol=1e-10)
    assert mass.solid_angle.to_value(u.sr) == pytest.approx(omega, rel=1e-12)
    assert mass.n_pixels == 200
    np.testing.assert_allclose(total_mass(slab).mass.value, 124 * expected.value, rtol=1e-10)
    np.testing.assert_allclose(dust_mass(slab, kappa=26000.0).mass.value, expected.value, rtol=1e-10)


def test_uniform_slab_to_an_intermediate_distance(slab: PosteriorMap) -> None:
    # to D = 250 pc the column is 2e-3 * 50 = 0.1 mag, and Eq. 9 uses D = 250 pc
    omega = np.radians(20.0) * 2 * np.sin(np.radians(5.0))
    mass = dust_mass(slab, distance=250 * u.pc)
    np.testing.assert_allclose(mass.median.value, eq9(250 * u.pc, 0.1, omega).value, rtol=1e-10)
    assert mass.distance == 250 * u.pc
    assert dust_mass(slab, distance=150.0).median.value == 0.0  # in front of the slab


def test_box_selects_pixels_by_centre(slab: PosteriorMap) -> None:
    # centres 45.5 .. 54.5 (10 columns) and -1.5 .. 1.5 (4 rows): l edges 45..55, b edges -2..2
    mass = dust_mass(slab, l=(45, 55), b=(-2 * u.deg, 2 * u.deg))
    assert mass.n_pixels == 40
    omega = np.radians(10.0) * 2 * np.sin(np.radians(2.0))
    np.testing.assert_allclose(mass.median.value, eq9(400 * u.pc, 0.2, omega).value, rtol=1e-10)
    with pytest.raises(ValueError, match="no pixel"):
        dust_mass(slab, l=(45.6, 45.9))


def test_box_crossing_l_zero() -> None:
    grid = Grid(l=(350, 10, 20), b=(-1, 1, 2), d=(100, 200, 2), ghost_cells=0)
    mask = pixel_mask(exact_map(grid, np.ones(grid.shape)), l=(355, 5))
    np.testing.assert_array_equal(mask[0], (np.arange(20) >= 5) & (np.arange(20) < 15))
    assert pixel_mask(exact_map(grid, np.ones(grid.shape)), l=(0, 360)).all()


def test_uniform_sphere() -> None:
    # A sphere of radius R = 10 pc and density rho at D0 = 200 pc. Eq. 9 puts every pixel's dust at the map's
    # far edge d_max, so it gives (d_max^2 / kappa) (ln10 / 2.5) rho * I with I the integral of the chord
    # length over solid angle, I = int dOmega chord = int dV / r^2, which for a ball is (shell by shell)
    #     I = 2 pi R - pi (D0^2 - R^2) / D0 * ln((D0 + R) / (D0 - R))   (-> V / D0^2 for R << D0),
    # i.e. (d_max / D0)^2 times the mass a detector at the sphere's own distance would infer.
    R, D0, rho = 10.0, 200.0, 3e-2
    half, n = 3.5, 160
    grid = Grid(l=(30 - half, 30 + half, n), b=(-half, half, n), d=(150, 260, 11), ghost_cells=1)
    b, l = np.meshgrid(grid.b_centers, grid.l_centers, indexing="ij")
    # the exact chord through each pixel centre, shared out over the cells it crosses, so that each
    # column's total extinction is exactly rho * chord at its centre
    unit = lbd_to_xyz(l, b, np.ones_like(l))
    along = unit @ lbd_to_xyz(np.array(30.0), np.array(0.0), np.array(D0))
    half_chord = np.sqrt(np.clip(R**2 - (D0**2 - along**2), 0.0, None))
    s1, s2 = along - half_chord, along + half_chord
    near, far = grid.d_edges[:-1, None, None], grid.d_edges[1:, None, None]
    overlap = np.clip(np.minimum(s2, far) - np.maximum(s1, near), 0.0, None)
    dmap = exact_map(grid, rho * overlap / grid.path_lengths[:, None, None])

    integral = 2 * np.pi * R - np.pi * (D0**2 - R**2) / D0 * np.log((D0 + R) / (D0 - R))
    expected = (grid.d_max * u.pc) ** 2 / KAPPA_V * TAU_PER_MAG * rho * integral
    # The sum over pixels is a midpoint rule on the disc, whose integrand has a square-root edge: its relative
    # error scales as (pixel / angular radius)^(3/2), 2e-3 here.
    pixel, radius = np.radians(2 * half / n), np.arcsin(R / D0)
    np.testing.assert_allclose(
        dust_mass(dmap).median.to_value(u.M_sun), expected.to_value(u.M_sun), rtol=(pixel / radius) ** 1.5
    )


def test_spread_from_samples(slab_grid: Grid, slab: PosteriorMap, rng: np.random.Generator) -> None:
    # each sample is the slab times one factor f_s, so its mass is M_slab * f_s: percentiles are known exactly
    factors = rng.lognormal(0.0, 0.3, 25)
    samples = factors[:, None, None, None] * slab.density_mean[None]
    dmap = exact_map(slab_grid, slab.density_mean, samples)
    m_slab = dust_mass(slab).median.value
    mass = dust_mass(dmap, q=(5, 16, 50, 84, 95))
    assert mass.method == "samples"
    expected = np.percentile(m_slab * factors, [5, 16, 50, 84, 95])
    np.testing.assert_allclose(mass.mass.value, expected, rtol=1e-10)
    assert mass.at(84).value > mass.median.value > mass.at(16).value
    assert "samples" in repr(mass)
    with pytest.raises(KeyError):
        mass.at(30)
