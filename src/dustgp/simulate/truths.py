"""The two built-in truths: the paper's Section 3 sky (random Gaussian clumps over a 1.6e-3 mag/pc background)
and a realistic region (a filament, a dense core, a near sheet and a far clump over a low background). See
:mod:`dustgp.simulate`.
"""

from __future__ import annotations

import numpy as np

from ..grid import Grid, lbd_to_xyz
from .structures import Clump, Filament, Sheet, Structure

__all__ = ["BACKGROUND", "REALISTIC_BACKGROUND", "realistic_region"]

BACKGROUND = 1.6e-3  # mag/pc, paper Sect. 3
#: Background density of the realistic region, mag/pc: 0.1 mag across 180-500 pc, so that the structures
#: carry most of the extinction, as in the solar neighbourhood's dust (Edenhofer et al. 2024).
REALISTIC_BACKGROUND = 3e-4


def _random_clumps(
    region: Grid,
    rng: np.random.Generator,
    *,
    n_clumps: int,
    clump_sigma: tuple[float, float],
    clump_peak: tuple[float, float],
) -> tuple[Clump, ...]:
    """The paper's Section 3 overdensities: ``n_clumps`` isotropic Gaussian clumps at random places.

    Centres are uniform in (l, b, d) over the inner 80% of each axis of ``region``; widths (pc) and peak densities
    above the background (mag/pc) uniform in ``clump_sigma`` and ``clump_peak``.

    Parameters
    ----------
    region : Grid
        The truth region, without ghost cells.
    rng : numpy.random.Generator
        Source of the draws: all centres (l, then b, then d), then each clump's width and peak in turn, the order
        of the paper's sky.
    n_clumps : int
        Clumps to draw.
    clump_sigma, clump_peak : tuple of float
        Ranges (lo, hi) of the widths, pc, and of the peaks, mag/pc.

    Returns
    -------
    tuple of Clump
    """
    l_lo, l_hi = region.l_edges[0], region.l_edges[-1]
    b_lo, b_hi = region.b_edges[0], region.b_edges[-1]
    d_lo, d_hi = region.d_min, region.d_max

    def inner(lo: float, hi: float, size: int) -> np.ndarray:
        pad = 0.1 * (hi - lo)
        return rng.uniform(lo + pad, hi - pad, size)

    centres = lbd_to_xyz(inner(l_lo, l_hi, n_clumps), inner(b_lo, b_hi, n_clumps), inner(d_lo, d_hi, n_clumps))
    return tuple(
        Clump(tuple(map(float, c)), float(rng.uniform(*clump_sigma)), float(rng.uniform(*clump_peak))) for c in centres
    )


def realistic_region(region: Grid, size: float = 1.0) -> tuple[Structure, ...]:
    """A filament, a dense core, a near sheet and a far clump, placed inside ``region``.

    Positions are fractions ``(fl, fb, fd)`` of the region's l, b and d ranges, sizes fractions of its smallest
    extent ``s`` in pc (across l or b at mid-distance, or in depth; 119 pc in the paper's region, where the
    figures in brackets hold):

    ========== ====================================== ============== ===========================
    name       where (fl, fb, fd)                     size           peak, mag/pc (column, mag)
    ========== ====================================== ============== ===========================
    near sheet d at fd = 0.12, sky box fl 0.05-0.45,  t = 0.06 s     0.02 (0.36 through it)
               fb 0.45-0.95                           (7.2 pc)
    filament   axis (0.10, 0.15, 0.45)-(0.75, 0.40,   σ = 0.08 s     0.015 (0.36 across its axis)
               0.55)                                  (9.5 pc)
    core       (0.70, 0.72, 0.30)                     σ = 0.07 s     0.06 (1.25 through its centre)
                                                      (8.3 pc)
    far clump  (0.88, 0.25, 0.82)                     σ = 0.15 s     0.015 (0.67 through its centre)
                                                      (18 pc)
    ========== ====================================== ============== ===========================

    No structure lies on another's :meth:`~Structure.sightline`, so the densest point along each one's sightline
    is its own. Pair with :data:`REALISTIC_BACKGROUND`.

    ``size`` scales every width (the sheet's thickness and the blur of its sky edges too) and divides every peak,
    so the column through each structure stays as tabled: ``size=2`` makes the structures as wide as one to two
    cells of the Section 3 training grid (9 pc deep, 1-2 deg across), where ``size=1`` puts the sheet, the
    filament and the core below one cell.

    Parameters
    ----------
    region : Grid
        The truth region (ghost cells ignored).
    size : float
        Factor on the widths and divisor of the peaks (> 0).

    Returns
    -------
    tuple of Structure
        ``(sheet, filament, core, far clump)``, named ``'near sheet'``, ``'filament'``, ``'core'``, ``'far clump'``.
    """
    if not size > 0:
        raise ValueError(f"size: expected a factor > 0, got {size!r}")
    region = region.with_ghost_cells(0)
    l_lo, l_hi = float(region.l_edges[0]), float(region.l_edges[-1])
    b_lo, b_hi = float(region.b_edges[0]), float(region.b_edges[-1])
    d_lo, d_hi = region.d_min, region.d_max
    d_mid = 0.5 * (d_lo + d_hi)
    b_far = max(abs(b_lo), abs(b_hi))  # the narrowest longitude extent is at the largest |b|
    s = min(
        d_hi - d_lo,
        d_mid * np.radians(l_hi - l_lo) * np.cos(np.radians(min(b_far, 89.0))),
        d_mid * np.radians(b_hi - b_lo),
    )

    def l_at(f: float) -> float:
        return l_lo + f * (l_hi - l_lo)

    def b_at(f: float) -> float:
        return b_lo + f * (b_hi - b_lo)

    def at(fl: float, fb: float, fd: float) -> tuple[float, float, float]:
        x, y, z = lbd_to_xyz(l_at(fl), b_at(fb), d_lo + fd * (d_hi - d_lo))
        return float(x), float(y), float(z)

    edge = 0.04 * min(l_hi - l_lo, b_hi - b_lo) * size  # deg: the sheet's sky edges widen with the rest
    return (
        Sheet(
            d_lo + 0.12 * (d_hi - d_lo),
            0.06 * s * size,
            0.02 / size,
            (l_at(0.05), l_at(0.45)),
            (b_at(0.45), b_at(0.95)),
            edge=edge,
            name="near sheet",
        ),
        Filament(at(0.10, 0.15, 0.45), at(0.75, 0.40, 0.55), 0.08 * s * size, 0.015 / size, name="filament"),
        Clump(at(0.70, 0.72, 0.30), 0.07 * s * size, 0.06 / size, name="core"),
        Clump(at(0.88, 0.25, 0.82), 0.15 * s * size, 0.015 / size, name="far clump"),
    )
