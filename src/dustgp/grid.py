"""The (l, b, d) grid of uniform cells on which phi = log10(density) lives.

A :class:`Grid` is regular in Galactic longitude and latitude and in distance (the distance spacing may be
non-uniform). In front of the first distance boundary ``d_min`` it adds foreground *ghost cells*, spanning
0 .. ``d_min`` in every (l, b) column: they hold the dust in front of the region and no star sits in them
(METHOD.md §2).

Cell arrays are ordered ``(distance, b, l)`` everywhere in dustgp, distance slowest, matching the axis order of
the FITS and NetCDF products (NAXIS1 = l, NAXIS2 = b, NAXIS3 = distance). The flat cell index is
``i_d * n_columns + i_b * n_l + i_l``; a *column* is one (b, l) sightline, ``i_b * n_l + i_l``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Grid", "GridError", "lbd_to_xyz"]

AxisSpec = tuple[float, float, int] | Sequence[float] | np.ndarray


class GridError(ValueError):
    """A grid specification or a position that does not fit the grid."""


def _edges(spec: AxisSpec, name: str) -> np.ndarray:
    """Cell edges from ``(lo, hi, n)`` or from an explicit increasing edge array."""
    if isinstance(spec, tuple) and len(spec) == 3 and isinstance(spec[2], int | np.integer):
        lo, hi, n = float(spec[0]), float(spec[1]), int(spec[2])
        if n < 1:
            raise GridError(f"{name}: expected at least 1 cell, got n={n}")
        if name == "l" and hi <= lo:
            hi += 360.0  # a longitude range that crosses l = 0/360
        if hi <= lo:
            raise GridError(f"{name}: expected lo < hi, got ({lo}, {hi})")
        return np.linspace(lo, hi, n + 1)
    edges = np.asarray(spec, dtype=float)
    if edges.ndim != 1 or edges.size < 2:
        raise GridError(f"{name}: expected (lo, hi, n) or at least two edges, got {spec!r}")
    if name == "l":
        edges = np.concatenate([edges[:1], edges[0] + np.cumsum(np.diff(edges) % 360.0)])
    if not np.all(np.diff(edges) > 0):
        raise GridError(f"{name}: edges must increase strictly, got {edges}")
    return edges


@dataclass(frozen=True, eq=False)
class Grid:
    """A grid regular in (l, b, d) with foreground ghost cells.

    Parameters
    ----------
    l, b : tuple of (float, float, int) or array_like
        Galactic longitude and latitude, deg: ``(lo, hi, n_cells)`` or explicit cell edges. A longitude range
        with ``hi < lo`` (e.g. ``(350, 10, 20)``) crosses l = 0; edges are then kept unwrapped (350 .. 370).
    d : tuple of (float, float, int) or array_like
        Distance, pc: ``(d_min, d_max, n_cells)`` or explicit, possibly non-uniform, edges with ``d_min > 0``.
    ghost_cells : int
        Number of foreground cells spanning 0 .. d_min in every column (0 for none).

    Examples
    --------
    >>> grid = Grid(l=(50, 90, 20), b=(-10, 10, 20), d=(180, 500, 35), ghost_cells=2)
    >>> grid.shape
    (37, 20, 20)
    """

    l: AxisSpec
    b: AxisSpec
    d: AxisSpec
    ghost_cells: int = 1
    l_edges: np.ndarray = field(init=False, repr=False)
    b_edges: np.ndarray = field(init=False, repr=False)
    d_edges: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        l_edges = _edges(self.l, "l")
        b_edges = _edges(self.b, "b")
        region = _edges(self.d, "d")
        if l_edges[-1] - l_edges[0] > 360.0 + 1e-9:
            raise GridError(f"l: a range wider than 360 deg, got {l_edges[0]}..{l_edges[-1]}")
        if b_edges[0] < -90.0 or b_edges[-1] > 90.0:
            raise GridError(f"b: expected edges within [-90, 90] deg, got {b_edges[0]}..{b_edges[-1]}")
        if region[0] <= 0 and self.ghost_cells > 0:
            raise GridError(f"d: ghost cells need d_min > 0 pc, got d_min={region[0]}")
        if region[0] < 0:
            raise GridError(f"d: distances must be >= 0 pc, got d_min={region[0]}")
        if int(self.ghost_cells) != self.ghost_cells or self.ghost_cells < 0:
            raise GridError(f"ghost_cells: expected a non-negative integer, got {self.ghost_cells!r}")
        ghosts = np.linspace(0.0, region[0], int(self.ghost_cells) + 1)[:-1]
        l_edges = l_edges - 360.0 * math.floor(l_edges[0] / 360.0)  # first edge in [0, 360)
        object.__setattr__(self, "l_edges", l_edges)
        object.__setattr__(self, "b_edges", b_edges)
        object.__setattr__(self, "d_edges", np.concatenate([ghosts, region]))
        object.__setattr__(self, "ghost_cells", int(self.ghost_cells))

    # ----- sizes -------------------------------------------------------------------------------------------
    @property
    def n_l(self) -> int:
        return self.l_edges.size - 1

    @property
    def n_b(self) -> int:
        return self.b_edges.size - 1

    @property
    def n_d(self) -> int:
        """Number of distance cells, ghost cells included."""
        return self.d_edges.size - 1

    @property
    def n_columns(self) -> int:
        """Number of (b, l) sightline columns."""
        return self.n_l * self.n_b

    @property
    def n_cells(self) -> int:
        return self.n_d * self.n_columns

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n_d, n_b, n_l)``, ghost cells included."""
        return (self.n_d, self.n_b, self.n_l)

    @property
    def d_min(self) -> float:
        """Near edge of the region (pc): the far edge of the ghost cells."""
        return float(self.d_edges[self.ghost_cells])

    @property
    def d_max(self) -> float:
        return float(self.d_edges[-1])

    # ----- centres and lengths ------------------------------------------------------------------------------
    @property
    def l_centers(self) -> np.ndarray:
        """Cell-centre longitudes (deg), wrapped into [0, 360)."""
        return (0.5 * (self.l_edges[1:] + self.l_edges[:-1])) % 360.0

    @property
    def b_centers(self) -> np.ndarray:
        return 0.5 * (self.b_edges[1:] + self.b_edges[:-1])

    @property
    def d_centers(self) -> np.ndarray:
        """Cell-centre distances (pc), ghost cells included."""
        return 0.5 * (self.d_edges[1:] + self.d_edges[:-1])

    @property
    def path_lengths(self) -> np.ndarray:
        """Length (pc) of each distance cell along its sightline, shape ``(n_d,)``."""
        return np.diff(self.d_edges)

    def cell_centers_lbd(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centres of all cells as ``(l, b, d)`` arrays of shape :attr:`shape` (deg, deg, pc)."""
        d, b, l = np.meshgrid(self.d_centers, self.b_centers, self.l_centers, indexing="ij")
        return l, b, d

    def cell_centers_xyz(self) -> np.ndarray:
        """Heliocentric Cartesian centres of all cells, shape ``(n_cells, 3)``, pc, flat cell order."""
        l, b, d = self.cell_centers_lbd()
        return lbd_to_xyz(l.ravel(), b.ravel(), d.ravel())

    def solid_angles(self) -> np.ndarray:
        """Solid angle of each (b, l) pixel, shape ``(n_b, n_l)``, sr (exact: Δl (sin b2 - sin b1))."""
        dl = np.radians(np.diff(self.l_edges))
        dsinb = np.diff(np.sin(np.radians(self.b_edges)))
        return dsinb[:, None] * dl[None, :]

    # ----- locating positions -------------------------------------------------------------------------------
    def unwrap_l(self, l: np.ndarray) -> np.ndarray:
        """Longitudes (deg) shifted by multiples of 360 into [l_edges[0], l_edges[0] + 360)."""
        lo = self.l_edges[0]
        return lo + np.mod(np.asarray(l, dtype=float) - lo, 360.0)

    def locate(self, l: np.ndarray, b: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cell indices ``(i_d, i_b, i_l)`` holding each position; -1 where the position is off the grid.

        Distances beyond ``d_max`` are off the grid; positions in the ghost cells get their ghost index.
        """
        l_u = self.unwrap_l(l)
        b = np.asarray(b, dtype=float)
        d = np.asarray(d, dtype=float)
        i_l = np.searchsorted(self.l_edges, l_u, side="right") - 1
        i_b = np.searchsorted(self.b_edges, b, side="right") - 1
        i_d = np.searchsorted(self.d_edges, d, side="right") - 1
        # the far edges belong to the last cells
        i_l = np.where(l_u == self.l_edges[-1], self.n_l - 1, i_l)
        i_b = np.where(b == self.b_edges[-1], self.n_b - 1, i_b)
        i_d = np.where(d == self.d_edges[-1], self.n_d - 1, i_d)
        inside = (i_l >= 0) & (i_l < self.n_l) & (i_b >= 0) & (i_b < self.n_b) & (i_d >= 0) & (i_d < self.n_d)
        inside &= np.isfinite(d) & np.isfinite(b) & np.isfinite(l_u)
        return tuple(np.where(inside, i, -1) for i in (i_d, i_b, i_l))  # type: ignore[return-value]

    # ----- derived grids -------------------------------------------------------------------------------------
    def refined(self, factor: float = 2.0, *, ghost_cells: int | None = None) -> Grid:
        """The same bounds with ``factor`` times as many cells on each axis (region distances uniform)."""
        n = [max(1, round(factor * k)) for k in (self.n_l, self.n_b, self.n_d - self.ghost_cells)]
        return Grid(
            l=(float(self.l_edges[0]), float(self.l_edges[-1]), n[0]),
            b=(float(self.b_edges[0]), float(self.b_edges[-1]), n[1]),
            d=np.linspace(self.d_min, self.d_max, n[2] + 1),
            ghost_cells=self.ghost_cells if ghost_cells is None else ghost_cells,
        )

    def with_ghost_cells(self, ghost_cells: int) -> Grid:
        return Grid(l=self.l_edges, b=self.b_edges, d=self.d_edges[self.ghost_cells :], ghost_cells=ghost_cells)

    def to_dict(self) -> dict[str, list[float] | int]:
        """Plain description (edges in deg, deg, pc) that :meth:`from_dict` restores exactly."""
        return {
            "l_edges": self.l_edges.tolist(),
            "b_edges": self.b_edges.tolist(),
            "d_edges": self.d_edges[self.ghost_cells :].tolist(),
            "ghost_cells": self.ghost_cells,
        }

    @classmethod
    def from_dict(cls, spec: dict) -> Grid:
        """Build a grid from :meth:`to_dict` output or a config table with ``l``, ``b``, ``d`` entries."""
        if "l_edges" in spec:
            return cls(l=spec["l_edges"], b=spec["b_edges"], d=spec["d_edges"], ghost_cells=spec["ghost_cells"])
        missing = [k for k in ("l", "b", "d") if k not in spec]
        if missing:
            raise GridError(f"grid: missing entries {missing}; expected l, b, d as [lo, hi, n] and ghost_cells")
        axes = {k: tuple(spec[k]) if len(spec[k]) == 3 else spec[k] for k in ("l", "b", "d")}
        axes = {k: (float(v[0]), float(v[1]), int(v[2])) if len(v) == 3 else v for k, v in axes.items()}
        return cls(**axes, ghost_cells=int(spec.get("ghost_cells", 1)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Grid):
            return NotImplemented
        return (
            self.ghost_cells == other.ghost_cells
            and np.array_equal(self.l_edges, other.l_edges)
            and np.array_equal(self.b_edges, other.b_edges)
            and np.array_equal(self.d_edges, other.d_edges)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Grid(l={self.l_edges[0]:g}..{self.l_edges[-1]:g} deg x {self.n_l}, "
            f"b={self.b_edges[0]:g}..{self.b_edges[-1]:g} deg x {self.n_b}, "
            f"d={self.d_min:g}..{self.d_max:g} pc x {self.n_d - self.ghost_cells}, ghost_cells={self.ghost_cells})"
        )


def lbd_to_xyz(l: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Heliocentric Cartesian positions (pc), shape ``(n, 3)``: x to l = 0, y to l = 90, z to b = 90.

    .. math:: x = d \\cos b \\cos l, \\quad y = d \\cos b \\sin l, \\quad z = d \\sin b
    """
    l_rad, b_rad = np.radians(l), np.radians(b)
    cos_b = np.cos(b_rad)
    return np.stack([d * cos_b * np.cos(l_rad), d * cos_b * np.sin(l_rad), d * np.sin(b_rad)], axis=-1)
