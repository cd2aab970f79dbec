"""Shared by the simulate tests: the regions they draw skies over, and Cartesian -> Galactic for closed forms."""

from __future__ import annotations

import numpy as np

from dustgp.grid import Grid

# A small truth grid, so that a sky of 20,000 stars is drawn in well under a second.
REGION = Grid(l=(60, 70, 20), b=(-4, 4, 10), d=(150, 300, 30), ghost_cells=0)
PAPER_REGION = Grid(l=(50, 90, 100), b=(-10, 10, 100), d=(180, 500, 115), ghost_cells=0)


def xyz_to_lbd(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Galactic (l, b, d) in (deg, deg, pc) of heliocentric Cartesian positions (pc), shape (n, 3)."""
    d = np.linalg.norm(xyz, axis=-1)
    return np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])) % 360, np.degrees(np.arcsin(xyz[:, 2] / d)), d
