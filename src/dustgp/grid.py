"""The (l, b, d) grid of uniform cells on which phi = log10(density) lives.

A :class:`Grid` is regular in Galactic longitude and latitude and in distance (the distance spacing may be
non-uniform). In front of the first distance boundary ``d_min`` it adds foreground *ghost cells*, spanning
0 .. ``d_min`` in every (l, b) column: they hold the dust in front of the region and no star sits in them
(docs: Method §2).

Cell arrays are ordered ``(distance, b, l)`` everywhere in dustgp, distance slowest, matching the axis order of
the FITS and NetCDF products (NAXIS1 = l, NAXIS2 = b, NAXIS3 = distance). The flat cell index is
``i_d * n_columns + i_b * n_l + i_l``; a *column* is one (b, l) sightline, ``i_b * n_l + i_l``.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DEFAULT_REFINEMENT", "Grid", "GridError", "lbd_to_xyz", "wrap_longitude"]

logger = logging.getLogger(__name__)

AxisSpec = tuple[float, float, int] | Sequence[float] | np.ndarray
#: Most cells on one axis (ghost cells included): far beyond any map (a 10⁴ × 10⁴ × 10⁴ grid is already 8 TB of
#: float64), low enough that a typo such as ``n = 10**12`` is refused by name instead of failing in numpy.
MAX_CELLS_PER_AXIS = 10**6
#: How many times finer than the training grid a map is predicted by default, on each axis: the paper predicts its
#: Section 3 map on a 50 × 50 × 52 grid over a 20 × 20 × 21 training grid (Dharmawardena et al. 2022, Sect. 3).
DEFAULT_REFINEMENT = 2.5


class GridError(ValueError):
    """A grid specification or a position that does not fit the grid."""


def _is_count(value: object) -> bool:
    """A whole number of cells: a Python or numpy integer, never a bool (``True`` is an ``int`` in Python)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _check_count(value: object, name: str, *, minimum: int) -> int:
    """``value`` as an int if it is an integer >= ``minimum``, else a :class:`GridError` naming ``name``."""
    if not _is_count(value):
        raise GridError(f"{name}: expected an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if int(value) < minimum:  # type: ignore[call-overload]
        raise GridError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if int(value) > MAX_CELLS_PER_AXIS:  # type: ignore[call-overload]
        raise GridError(f"{name}: expected at most {MAX_CELLS_PER_AXIS:,} cells, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def _edges(spec: AxisSpec, name: str) -> np.ndarray:
    """Cell edges from a ``(lo, hi, n)`` tuple or from an explicit increasing edge array.

    A tuple of three is always ``(lo, hi, n)``, and ``n`` must be an integer: ``(10, 20, 6.0)`` is refused, not
    read as the edges 10, 20, 6. Lists and arrays are edges; a list of three integers that makes valid edges is
    accepted with a warning, since ``[lo, hi, n]`` means cells in a run file.
    """
    unit = "pc" if name == "d" else "deg"
    if isinstance(spec, tuple) and len(spec) == 3:
        lo, hi, n = spec
        if not _is_count(n):
            raise GridError(
                f"{name}: expected (lo, hi, n) with n an integer number of cells, got n={n!r} "
                f"({type(n).__name__}); for explicit cell edges pass a list or numpy array"
            )
        for what, value in (("lo", lo), ("hi", hi)):
            if not _is_real(value):
                raise GridError(f"{name}: expected (lo, hi, n) with {what} a number in {unit}, got {value!r}")
            if not math.isfinite(value):
                raise GridError(f"{name}: expected finite bounds in {unit}, got {what}={value}")
        lo, hi, n = float(lo), float(hi), int(n)
        if n < 1:
            raise GridError(f"{name}: expected at least 1 cell, got n={n}")
        if n > MAX_CELLS_PER_AXIS:
            raise GridError(f"{name}: expected at most {MAX_CELLS_PER_AXIS:,} cells, got n={n}")
        if not math.isfinite(hi - lo):  # e.g. (-1e308, 1e308, n): the width itself overflows
            raise GridError(f"{name}: expected bounds whose difference is finite, got ({lo:g}, {hi:g}) {unit}")
        if name == "l" and hi <= lo:
            hi += 360.0  # a longitude range that crosses l = 0/360
        if hi <= lo:
            raise GridError(f"{name}: expected lo < hi, got ({lo:g}, {hi:g}) {unit}")
        return np.linspace(lo, hi, n + 1)
    try:
        raw = np.asarray(spec)
    except (ValueError, TypeError):  # ragged nesting, e.g. [[1.0], [1.0, 2.0]]
        raw = np.asarray(None)
    if raw.dtype.kind not in "iuf" or raw.ndim != 1 or raw.size < 2:
        raise GridError(
            f"{name}: expected a (lo, hi, n) tuple or a 1-D list of at least two edges in {unit}, got {spec!r}"
        )
    edges = raw.astype(float)
    if not np.all(np.isfinite(edges)):
        raise GridError(f"{name}: expected finite edges in {unit}, got {edges}")
    hint = ""
    if raw.size == 3 and not isinstance(spec, np.ndarray):
        hint = f"; for (lo, hi, n) cells write a tuple ({', '.join(f'{v:g}' for v in edges)})"
    if name == "l":
        # A longitude range may cross 360 -> 0 (a drop of more than 180 deg, e.g. 355 -> 5); any other decrease
        # is a mistake, not a wrap (20 -> 6 would otherwise become a cell of 346 deg).
        steps = np.diff(edges)
        if np.any((steps < 0) & (steps >= -180.0)):
            raise GridError(f"{name}: edges must increase strictly (crossing 360 -> 0 once), got {edges}{hint}")
        if np.any(steps < 0):  # unwrapped only where it wraps: a cumulative sum would round increasing edges
            edges = np.concatenate([edges[:1], edges[0] + np.cumsum(steps % 360.0)])
    if not np.all(np.diff(edges) > 0):
        raise GridError(f"{name}: edges must increase strictly, got {edges}{hint}")
    if hint and raw.dtype.kind in "iu":
        logger.warning("%s: the list %s is read as %d cell edges (2 cells)%s", name, list(spec), raw.size, hint)
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
        ghost_cells = _check_count(self.ghost_cells, "ghost_cells", minimum=0)
        l_edges = _edges(self.l, "l")
        b_edges = _edges(self.b, "b")
        region = _edges(self.d, "d")
        if l_edges[-1] - l_edges[0] > 360.0 + 1e-9:
            raise GridError(f"l: a range wider than 360 deg, got {l_edges[0]:g}..{l_edges[-1]:g}")
        if b_edges[0] < -90.0 or b_edges[-1] > 90.0:
            raise GridError(f"b: expected edges within [-90, 90] deg, got {b_edges[0]:g}..{b_edges[-1]:g}")
        if region[0] < 0:
            raise GridError(f"d: distances must be >= 0 pc, got d_min={region[0]:g}")
        if region[0] == 0 and ghost_cells > 0:
            raise GridError(f"d: ghost cells need d_min > 0 pc, got d_min={region[0]:g} (or set ghost_cells = 0)")
        ghosts = np.linspace(0.0, region[0], ghost_cells + 1)[:-1]
        l_edges = l_edges - 360.0 * math.floor(l_edges[0] / 360.0)  # first edge in [0, 360)
        object.__setattr__(self, "l_edges", l_edges)
        object.__setattr__(self, "b_edges", b_edges)
        object.__setattr__(self, "d_edges", np.concatenate([ghosts, region]))
        object.__setattr__(self, "ghost_cells", ghost_cells)

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

    def cell_volumes(self) -> np.ndarray:
        """Volume of each cell, shape ``(n_d, n_b, n_l)``, pc³ (exact: ΔΩ (d2³ - d1³) / 3)."""
        shells = np.diff(self.d_edges**3) / 3.0
        return shells[:, None, None] * self.solid_angles()[None]

    # ----- locating positions -------------------------------------------------------------------------------
    def unwrap_l(self, l: np.ndarray) -> np.ndarray:
        """Longitudes (deg) shifted by multiples of 360 into [l_edges[0], l_edges[0] + 360)."""
        return wrap_longitude(l, self.l_edges[0])

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

    def distance_cell(self, d: float) -> int:
        """Index of the distance cell holding ``d`` (pc), ghost cells counted; a distance off the grid takes the
        nearest cell (for picking a slice to show, where :meth:`locate` would say "off the grid")."""
        return int(np.clip(np.searchsorted(self.d_edges, d, side="right") - 1, 0, self.n_d - 1))

    # ----- derived grids -------------------------------------------------------------------------------------
    def refined(self, factor: float = DEFAULT_REFINEMENT, *, ghost_cells: int | None = None) -> Grid:
        """The same bounds with ``factor`` times as many cells on each axis (region distances uniform); by default
        the prediction grid's :data:`DEFAULT_REFINEMENT`."""
        if not (_is_real(factor) and math.isfinite(factor) and factor > 0):
            raise GridError(f"refine: expected a finite factor > 0, got {factor!r}")
        n = [max(1, round(factor * k)) for k in (self.n_l, self.n_b, self.n_d - self.ghost_cells)]
        if max(n) > MAX_CELLS_PER_AXIS:
            raise GridError(f"refine: {factor:g} makes {max(n):,} cells on one axis, more than {MAX_CELLS_PER_AXIS:,}")
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
    def from_dict(cls, spec: Mapping[str, Any]) -> Grid:
        """Build a grid from :meth:`to_dict` output or a config table with ``l``, ``b``, ``d`` entries.

        In a config table each axis is ``[lo, hi, n]`` (n an integer) or a list of more than three edges, and
        ``ghost_cells`` (default 1) an integer.
        """
        if not isinstance(spec, Mapping):
            raise GridError(f"grid: expected a table with l, b, d, got {spec!r}")
        if "l_edges" in spec:
            edges = {k: np.asarray(spec[f"{k}_edges"], dtype=float) for k in ("l", "b", "d")}
            return cls(**edges, ghost_cells=spec["ghost_cells"])
        missing = [k for k in ("l", "b", "d") if k not in spec]
        if missing:
            raise GridError(f"grid: missing entries {missing}; expected l, b, d as [lo, hi, n] and ghost_cells")
        axes: dict[str, AxisSpec] = {}
        for k in ("l", "b", "d"):
            value = spec[k]
            if not isinstance(value, Sequence | np.ndarray) or isinstance(value, str):
                raise GridError(f"{k}: expected [lo, hi, n] or a list of edges, got {value!r}")
            # a list of three is [lo, hi, n], as documented for run files; longer lists are edges
            axes[k] = tuple(value) if len(value) == 3 else np.asarray(value)
        return cls(**axes, ghost_cells=spec.get("ghost_cells", 1))

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


def wrap_longitude(l: np.ndarray | float, start: float) -> np.ndarray:
    """Longitudes (deg) shifted by multiples of 360 into ``[start, start + 360)``: the one wrapping rule.

    A grid starts the turn at its first edge (:meth:`Grid.unwrap_l`: half-open cells, a position just below the
    first edge is off the grid); distances to a region start it half a turn before the region's centre (so that a
    position just below the first edge stays just below it, :mod:`dustgp.tiles`).
    """
    return start + np.mod(np.asarray(l, dtype=float) - start, 360.0)


def lbd_to_xyz(l: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Heliocentric Cartesian positions (pc), shape ``(n, 3)``: x to l = 0, y to l = 90, z to b = 90.

    .. math:: x = d \\cos b \\cos l, \\quad y = d \\cos b \\sin l, \\quad z = d \\sin b
    """
    l_rad, b_rad = np.radians(l), np.radians(b)
    cos_b = np.cos(b_rad)
    return np.stack([d * cos_b * np.cos(l_rad), d * cos_b * np.sin(l_rad), d * np.sin(b_rad)], axis=-1)
