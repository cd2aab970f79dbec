"""Small simulated skies and fits shared by the tests of :mod:`dustgp.fitting` (one per session, however many test
modules use them): the SVI fit of a one-clump sky and the newton fit of a smaller one."""

from __future__ import annotations

import functools

import dustgp
from dustgp.grid import Grid
from dustgp.sightlines import GaussianStatistics, Sightlines
from dustgp.simulate import simulate

REGION = Grid(l=(60, 80, 40), b=(-5, 5, 20), d=(150, 350, 40), ghost_cells=0)
#: Training grid of the SVI fit.
TRAIN = Grid(l=(60, 80, 10), b=(-5, 5, 5), d=(150, 350, 12), ghost_cells=1)
#: Training grid of the newton fit.
NEWTON_TRAIN = Grid(l=(60, 80, 8), b=(-5, 5, 4), d=(150, 350, 10), ghost_cells=1)
# the paper's likelihood: these fits test the fitting methods, tests/test_likelihood.py the likelihoods
SMALL_FIT = {
    "method": "svi", "inducing_points": 150, "length_scale": 20.0, "seed": 3,
    "likelihood": "gaussian",
    "error_floor": 0.0,
}  # fmt: skip
SMALL_NEWTON = {
    "method": "newton", "inducing_points": 80, "length_scale": 20.0, "seed": 3,
    "likelihood": "gaussian",
    "error_floor": 0.0,
}  # fmt: skip


def clump_sky(foreground: bool, noise_floor: float = 0.0):
    """3000 stars around one 20 pc clump, sigma_A = 10% of A above ``noise_floor`` (mag); without ``foreground``
    dust the stars just behind d_min quote ~1e-4 mag: the stiff sky of the newton and foreground tests."""
    region = Grid(l=(60, 80, 30), b=(-5, 5, 15), d=(150, 350, 40), ghost_cells=0)
    return simulate(
        region,
        n_stars=3000,
        n_clumps=1,
        clump_sigma=(20, 20),
        clump_peak=(1e-2, 1e-2),
        foreground=foreground,
        noise_floor=noise_floor,
        seed=11,
    )


@functools.cache
def svi_sky():
    """6000 stars in front of and behind one 22 pc clump."""
    return simulate(REGION, n_stars=6000, n_clumps=1, clump_sigma=(22, 22), clump_peak=(1.5e-2, 1.5e-2), seed=5)


@functools.cache
def svi_fit() -> dustgp.Fit:
    """The SVI fit of :func:`svi_sky` on :data:`TRAIN` (up to 700 iterations, map rule)."""
    return dustgp.fit(svi_sky().catalog, TRAIN, max_iterations=700, progress=False, **SMALL_FIT)


@functools.cache
def newton_sky():
    """3000 stars in front of and behind one 22 pc clump."""
    return simulate(REGION, n_stars=3000, n_clumps=1, clump_sigma=(22, 22), clump_peak=(1.5e-2, 1.5e-2), seed=5)


@functools.cache
def newton_fit() -> dustgp.Fit:
    """The newton fit of :func:`newton_sky` on :data:`NEWTON_TRAIN` (up to 150 steps)."""
    return dustgp.fit(newton_sky().catalog, NEWTON_TRAIN, progress=False, max_iterations=150, **SMALL_NEWTON)


def gaussian_statistics(sky, grid: Grid) -> GaussianStatistics:
    """The per-cell sufficient statistics of a sky's catalogue on ``grid`` (Gaussian likelihood, no floor)."""
    cat = sky.catalog
    lines = Sightlines.from_positions(grid, cat.l, cat.b, cat.distance)
    return GaussianStatistics.from_stars(lines, cat.extinction[lines.star_index], cat.extinction_err[lines.star_index])
