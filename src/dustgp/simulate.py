"""Simulated skies with known truth: the experiment of the paper's Section 3 (METHOD.md §9), at any size.

Truth: a constant background density (1.6e-3 mag/pc, 0.5 mag across 180-500 pc) plus Gaussian clumps at random
places in the region. The background fills the foreground too (0 .. d_min: 0.29 mag in front of 180 pc), as a
uniform interstellar medium would; ``foreground=False`` empties it instead. Stars are uniform in l, b and in d³
(uniform space density); their extinction is integrated on a fine truth grid (100 × 100 × 115 cells in the paper)
with the same partial-cell rule the model uses, then Gaussian noise with sigma equal to a fraction (10%) of the
true extinction is added.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .catalog import Catalog
from .grid import Grid, lbd_to_xyz
from .sightlines import Sightlines

__all__ = ["Clump", "SimulatedSky", "paper_experiment", "simulate", "true_density"]

BACKGROUND = 1.6e-3  # mag/pc, paper Sect. 3


@dataclass(frozen=True)
class Clump:
    """An isotropic Gaussian overdensity: ``peak * exp(-|x - center|² / (2 sigma²))``.

    Attributes
    ----------
    center : tuple of float
        Heliocentric Cartesian centre, pc.
    sigma : float
        Gaussian width, pc.
    peak : float
        Peak extinction density above the background, mag/pc.
    """

    center: tuple[float, float, float]
    sigma: float
    peak: float


@dataclass(frozen=True)
class SimulatedSky:
    """Truth and observations of a simulated sky.

    Attributes
    ----------
    region : Grid
        The truth grid (no ghost cells; density is zero in front of ``region.d_min``).
    background : float
        Background density inside the region, mag/pc.
    clumps : tuple of Clump
    catalog : Catalog
        Noisy observed extinctions at the true star positions.
    true_extinction : numpy.ndarray
        Noise-free extinction to each star of ``catalog``, mag.
    seed : int
    """

    region: Grid
    background: float
    clumps: tuple[Clump, ...]
    catalog: Catalog
    true_extinction: np.ndarray
    seed: int
    foreground: bool = True

    def density_at(self, l: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
        """True density (mag/pc) at positions (deg, deg, pc)."""
        return true_density(
            l,
            b,
            d,
            region=self.region,
            background=self.background,
            clumps=self.clumps,
            foreground=self.foreground,
        )

    def density_on(self, grid: Grid) -> np.ndarray:
        """True density at the cell centres of ``grid``, shape ``grid.shape``, mag/pc."""
        return self.density_at(*grid.cell_centers_lbd())

    def extinction_on(self, grid: Grid) -> np.ndarray:
        """True extinction to the far edge of every cell of ``grid``, shape ``grid.shape``, mag.

        Integrated on ``grid`` itself with cell-centre densities, like the model does.
        """
        rho = self.density_on(grid)
        return np.cumsum(rho * grid.path_lengths[:, None, None], axis=0)


def true_density(
    l: np.ndarray,
    b: np.ndarray,
    d: np.ndarray,
    *,
    region: Grid,
    background: float,
    clumps: tuple[Clump, ...],
    foreground: bool = True,
) -> np.ndarray:
    """Background plus Gaussian clumps at (deg, deg, pc), mag/pc; zero beyond the region (and in front of it
    unless ``foreground``)."""
    d = np.asarray(d, float)
    xyz = lbd_to_xyz(np.asarray(l, float), np.asarray(b, float), d)
    rho = np.full(xyz.shape[:-1], background)
    for clump in clumps:
        r2 = ((xyz - np.asarray(clump.center)) ** 2).sum(-1)
        rho += clump.peak * np.exp(-0.5 * r2 / clump.sigma**2)
    d_lo = 0.0 if foreground else region.d_min
    return np.where((d >= d_lo) & (d <= region.d_max), rho, 0.0)


def _truth_extinction(region: Grid, density: np.ndarray, l: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
    sightlines = Sightlines.from_positions(region, l, b, d)
    if len(sightlines) != len(l) or sightlines.n_in_ghost_cells:
        raise ValueError("simulated stars must lie inside the truth grid")
    return sightlines.extinction(torch.as_tensor(density)).numpy()


def simulate(
    region: Grid,
    *,
    n_stars: int = 120_000,
    n_clumps: int = 3,
    background: float = BACKGROUND,
    clump_sigma: tuple[float, float] = (20.0, 35.0),
    clump_peak: tuple[float, float] = (8e-3, 2.4e-2),
    noise: float = 0.1,
    foreground: bool = True,
    seed: int = 0,
) -> SimulatedSky:
    """Draw a simulated sky over ``region``.

    Parameters
    ----------
    region : Grid
        Truth grid; its distance range is where dust and stars are. Ghost cells of ``region`` are ignored.
    n_stars : int
        Stars uniform in l, in b (as in the paper) and in d³.
    n_clumps : int
        Gaussian overdensities, centres uniform in (l, b, d) over the inner 80% of each axis of the region.
    background : float
        Density inside the region, mag/pc.
    clump_sigma, clump_peak : tuple of float
        Ranges (uniform) of clump widths, pc, and peak densities above the background, mag/pc.
    noise : float
        Fractional Gaussian noise on extinction: sigma_i = noise × A_true,i.
    foreground : bool
        Fill 0 .. d_min with the background density (True) or leave it empty.
    seed : int

    Returns
    -------
    SimulatedSky
    """
    rng = np.random.default_rng(seed)
    region = region.with_ghost_cells(0)
    l_lo, l_hi = region.l_edges[0], region.l_edges[-1]
    b_lo, b_hi = region.b_edges[0], region.b_edges[-1]
    d_lo, d_hi = region.d_min, region.d_max

    def inner(lo: float, hi: float, size: int) -> np.ndarray:
        pad = 0.1 * (hi - lo)
        return rng.uniform(lo + pad, hi - pad, size)

    centres = lbd_to_xyz(inner(l_lo, l_hi, n_clumps), inner(b_lo, b_hi, n_clumps), inner(d_lo, d_hi, n_clumps))
    clumps = tuple(
        Clump(tuple(map(float, c)), float(rng.uniform(*clump_sigma)), float(rng.uniform(*clump_peak))) for c in centres
    )
    l = rng.uniform(l_lo, l_hi, n_stars) % 360.0
    b = rng.uniform(b_lo, b_hi, n_stars)
    d = np.cbrt(rng.uniform(d_lo**3, d_hi**3, n_stars))
    # one foreground cell 0 .. d_min in front of the truth grid carries the foreground dust
    with_front = region.with_ghost_cells(1)
    truth_grid = true_density(
        *with_front.cell_centers_lbd(),
        region=region,
        background=background,
        clumps=clumps,
        foreground=foreground,
    )
    truth = _truth_extinction(with_front, truth_grid, l, b, d)
    sigma = noise * truth
    observed = truth + sigma * rng.standard_normal(n_stars)
    catalog = Catalog.from_arrays(l, b, d, observed, sigma)
    return SimulatedSky(region, background, clumps, catalog, truth, seed, foreground)


def paper_experiment(*, n_stars: int = 120_000, seed: int = 0) -> SimulatedSky:
    """The paper's Section 3 sky: l 50-90°, b -10..10°, d 180-500 pc on a 100 × 100 × 115 truth grid."""
    return simulate(
        Grid(l=(50, 90, 100), b=(-10, 10, 100), d=(180, 500, 115), ghost_cells=0), n_stars=n_stars, seed=seed
    )
