"""Tile geometry: split a region into overlapping tiles (:func:`plan_tiles`) and weigh each tile's part of a map
(:class:`Tile`). Pure: no Dask, no torch. The blending rule is in the notes of :mod:`dustgp.tiles`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import astropy.units as u
import numpy as np

from ..grid import Grid, GridError, wrap_longitude

__all__ = ["Tile", "TileError", "plan_tiles"]

Bounds = tuple[float, float]
OverlapSpec = int | u.Quantity
AXES = ("l", "b", "d")
#: Units in which an overlap given as a Quantity is read, per axis.
_AXIS_UNITS = {"l": u.deg, "b": u.deg, "d": u.pc}


class TileError(RuntimeError):
    """A tile that cannot be planned, fitted or merged; the message names the tile."""


def _taper(t: np.ndarray) -> np.ndarray:
    """Cosine taper from 0 (t <= 0) to 1 (t >= 1): ``sin²(π t / 2)``, with ``taper(t) + taper(1 - t) = 1``."""
    return np.sin(0.5 * np.pi * np.clip(t, 0.0, 1.0)) ** 2


def _unwrap(l: np.ndarray, centre: float) -> np.ndarray:
    """Longitudes (deg) shifted by multiples of 360 into ``centre - 180 .. centre + 180``.

    Centred on the region (rather than starting at its first edge) so that a position just below the first
    edge stays just below it instead of jumping a full turn to the far side.
    """
    return wrap_longitude(l, centre - 180.0)


@dataclass(frozen=True, eq=False)
class Tile:
    """One tile of a region: its training grid, the core it is responsible for, and its blend weight.

    Attributes
    ----------
    index : int
        Position in the plan, near to far: distance layer slowest, then b, then l.
    position : tuple of 3 int
        ``(i_l, i_b, i_d)``: the tile's place along each axis.
    counts : tuple of 3 int
        ``(n_l, n_b, n_d)``: tiles along each axis.
    grid : Grid
        Training grid: the core plus the shared margins, on the parent grid's cells. Tiles of the nearest
        distance layer keep the parent's foreground ghost cells; farther tiles have none (their foreground comes
        from the nearer layer, see the notes of :mod:`dustgp.tiles`).
    core : tuple of 3 (float, float)
        ``(l_lo, l_hi)`` deg (unwrapped, increasing), ``(b_lo, b_hi)`` deg, ``(d_lo, d_hi)`` pc.
    blend : tuple of 3 (float, float)
        Half-width ``h`` of the taper strip at the lower and upper side of the core on each axis (deg, deg, pc);
        0 for a hard cut.
    neighbours : tuple of 3 (bool, bool)
        Whether a neighbouring tile lies below / above the core on each axis. Sides without one are outer sides:
        weight 1 out to infinity.
    l_centre : float
        Centre of the parent region in longitude (deg), the reference for unwrapping longitudes.
    """

    index: int
    position: tuple[int, int, int]
    counts: tuple[int, int, int]
    grid: Grid
    core: tuple[Bounds, Bounds, Bounds]
    blend: tuple[Bounds, Bounds, Bounds]
    neighbours: tuple[tuple[bool, bool], tuple[bool, bool], tuple[bool, bool]]
    l_centre: float

    @property
    def layer(self) -> int:
        """Distance layer, 0 nearest."""
        return self.position[2]

    @property
    def name(self) -> str:
        """Human-readable label used in logs and error messages."""
        (l0, l1), (b0, b1), (d0, d1) = self.core
        where = ", ".join(f"{a} {p + 1}/{n}" for a, p, n in zip(AXES, self.position, self.counts, strict=True))
        return (
            f"tile {self.index} [{where}] (l {l0 % 360:g}..{l1 % 360:g} deg, b {b0:g}..{b1:g} deg, d {d0:g}..{d1:g} pc)"
        )

    def axis_weight(self, axis: int, x: np.ndarray) -> np.ndarray:
        """Blend weight along one axis (0 = l, 1 = b, 2 = d) at coordinates ``x`` (deg or pc), in [0, 1]."""
        x = np.asarray(x, dtype=float)
        if axis == 0:
            x = _unwrap(x, self.l_centre)
        lo, hi = self.core[axis]
        h_lo, h_hi = self.blend[axis]
        below, above = self.neighbours[axis]
        w = np.ones_like(x)
        if below:
            w = w * (_taper((x - (lo - h_lo)) / (2.0 * h_lo)) if h_lo > 0 else (x >= lo).astype(float))
        if above:
            w = w * (_taper(((hi + h_hi) - x) / (2.0 * h_hi)) if h_hi > 0 else (x < hi).astype(float))
        return w

    def weight(self, l: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Blend weight at positions ``(l, b, d)`` (deg, deg, pc): the product of the per-axis weights.

        Summed over all tiles of a plan, the weights are 1 everywhere.
        """
        return self.axis_weight(0, l) * self.axis_weight(1, b) * self.axis_weight(2, d)

    def contains(self, l: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Boolean mask of the stars at ``(l, b, d)`` that lie in the tile's training grid (not in ghost cells)."""
        i_d, _, _ = self.grid.locate(l, b, d)
        return i_d >= self.grid.ghost_cells

    def piece(self, grid: Grid) -> tuple[Grid, tuple[slice, slice, slice]]:
        """The block of ``grid``'s cells where this tile's weight is positive.

        Parameters
        ----------
        grid : Grid
            A prediction grid over (part of) the parent region.

        Returns
        -------
        piece : Grid
            That block as a grid of its own: with ``grid``'s ghost cells for the nearest distance layer, with
            none for farther layers (it then starts at its first cell's near edge).
        index : tuple of 3 slices
            Where the block sits in ``grid``'s ``(d, b, l)`` cell arrays (ghost cells counted).

        Raises
        ------
        TileError
            The tile has no weight on any cell of ``grid``, or a far tile would reach into the ghost cells.
        """
        ranges = []
        for axis, centres in enumerate((grid.l_centers, grid.b_centers, grid.d_centers)):
            hits = np.flatnonzero(self.axis_weight(axis, centres) > 0)
            if hits.size == 0:
                raise TileError(f"{self.name}: covers no {AXES[axis]} cell of the prediction grid {grid!r}")
            ranges.append((int(hits[0]), int(hits[-1]) + 1))
        (l0, l1), (b0, b1), (k0, k1) = ranges
        ghosts = grid.ghost_cells
        if k0 < ghosts:
            if k0 != 0 or k1 <= ghosts:
                raise TileError(f"{self.name}: its piece of {grid!r} would start inside the ghost cells")
            d_spec, n_ghost = grid.d_edges[ghosts : k1 + 1], ghosts
        else:
            d_spec, n_ghost = grid.d_edges[k0 : k1 + 1], 0
        piece = Grid(l=grid.l_edges[l0 : l1 + 1], b=grid.b_edges[b0 : b1 + 1], d=d_spec, ghost_cells=n_ghost)
        return piece, (slice(k0, k1), slice(b0, b1), slice(l0, l1))

    def piece_weights(self, grid: Grid, index: tuple[slice, slice, slice], *, axes: str = "lbd") -> np.ndarray:
        """Weights on the cells ``index`` of ``grid`` (from :meth:`piece`), shape ``(n_d, n_b, n_l)`` of the block.

        ``axes`` names the axes whose taper counts (``"lb"`` ignores distance: a layer's own merge).
        """
        sd, sb, sl = index
        w_l = self.axis_weight(0, grid.l_centers[sl]) if "l" in axes else np.ones(sl.stop - sl.start)
        w_b = self.axis_weight(1, grid.b_centers[sb]) if "b" in axes else np.ones(sb.stop - sb.start)
        w_d = self.axis_weight(2, grid.d_centers[sd]) if "d" in axes else np.ones(sd.stop - sd.start)
        return w_d[:, None, None] * w_b[None, :, None] * w_l[None, None, :]


def _overlap_specs(overlap: Any) -> tuple[OverlapSpec, OverlapSpec, OverlapSpec]:
    if isinstance(overlap, tuple | list):
        if len(overlap) != 3:
            raise GridError(f"overlap: expected one value or three (l, b, d), got {len(overlap)} values")
        specs = tuple(overlap)
    elif isinstance(overlap, u.Quantity):
        raise GridError(
            f"overlap: a Quantity needs one value per axis, e.g. (1 * u.deg, 1 * u.deg, 20 * u.pc); got {overlap!r}"
        )
    else:
        specs = (overlap, overlap, overlap)
    for axis, spec in zip(AXES, specs, strict=True):
        if isinstance(spec, u.Quantity):
            if not spec.unit.is_equivalent(_AXIS_UNITS[axis]) or not spec.isscalar or spec.value < 0:
                raise GridError(
                    f"overlap along {axis}: expected a non-negative scalar in {_AXIS_UNITS[axis]}, got {spec!r}"
                )
        elif isinstance(spec, bool) or not isinstance(spec, int | np.integer) or spec < 0:
            raise GridError(
                f"overlap along {axis}: expected a non-negative number of cells (int) or a Quantity in "
                f"{_AXIS_UNITS[axis]}, got {spec!r}"
            )
    return specs  # type: ignore[return-value]


def _margin_cells(spec: OverlapSpec, axis: str, edges: np.ndarray, boundary: int) -> tuple[int, int]:
    """Cells of margin ``(below, above)`` the edge ``edges[boundary]``: an int as is, a Quantity rounded up."""
    n = edges.size - 1
    if not isinstance(spec, u.Quantity):
        return min(int(spec), boundary), min(int(spec), n - boundary)
    width = float(spec.to_value(_AXIS_UNITS[axis]))
    edge = edges[boundary]
    # smallest k with edges[boundary + k] - edge >= width (and likewise below), capped by the grid's extent
    above = int(np.searchsorted(edges[boundary:] - edge, width - 1e-9 * max(width, 1.0), side="left"))
    below = int(np.searchsorted(edge - edges[boundary::-1], width - 1e-9 * max(width, 1.0), side="left"))
    return min(below, boundary), min(above, n - boundary)


def _split_axis(
    edges: np.ndarray, n_tiles: int, spec: OverlapSpec, axis: str, blend: float
) -> list[tuple[tuple[int, int], Bounds, Bounds, tuple[bool, bool]]]:
    """Per tile along one axis: extent (cell range), core (coordinates), taper half-widths, neighbours."""
    n_cells = edges.size - 1
    if isinstance(n_tiles, bool) or not isinstance(n_tiles, int | np.integer) or n_tiles < 1:
        raise GridError(f"n_{axis}: expected a positive number of tiles, got {n_tiles!r}")
    if n_tiles > n_cells:
        raise GridError(f"n_{axis}: expected at most {n_cells} tiles (one per cell), got {n_tiles}")
    splits = np.linspace(0, n_cells, n_tiles + 1).round().astype(int)
    margins = [(0, 0)] + [_margin_cells(spec, axis, edges, int(e)) for e in splits[1:-1]] + [(0, 0)]
    half = [0.0]
    for (below, above), e in zip(margins[1:-1], splits[1:-1], strict=True):
        shared = min(edges[e + above] - edges[e], edges[e] - edges[e - below])
        half.append(blend * float(shared))
    half.append(0.0)
    out = []
    for t in range(n_tiles):
        c0, c1 = int(splits[t]), int(splits[t + 1])
        lo_cell = c0 - margins[t][0]
        hi_cell = c1 + margins[t + 1][1]
        core = (float(edges[c0]), float(edges[c1]))
        taper = (half[t], half[t + 1])
        if taper[0] + taper[1] > core[1] - core[0] + 1e-9:
            raise GridError(
                f"along {axis}: taper strips of {2 * taper[0]:g} and {2 * taper[1]:g} do not fit in a core "
                f"{core[1] - core[0]:g} wide ({c1 - c0} cells); use fewer tiles, a smaller overlap or blend"
            )
        out.append(((lo_cell, hi_cell), core, taper, (t > 0, t < n_tiles - 1)))
    return out


def plan_tiles(
    grid: Grid,
    *,
    n_l: int,
    n_b: int,
    n_d: int = 1,
    overlap: int | u.Quantity | tuple[int | u.Quantity, int | u.Quantity, int | u.Quantity] = 2,
    blend: float = 1.0,
) -> list[Tile]:
    """Split a region into overlapping tiles in l, b and distance.

    Parameters
    ----------
    grid : Grid
        The region's training grid. Tiles are made of its cells; cores split each axis into nearly equal runs of
        cells (distance: the cells beyond the ghost cells).
    n_l, n_b, n_d : int
        Tiles along longitude, latitude and distance.
    overlap : int, or tuple of 3 (int or Quantity)
        Margin added to a core on each side that has a neighbour, so that two neighbouring training grids share
        twice this. An int counts cells (on every axis when given alone); a Quantity (deg for l and b, pc for d,
        given per axis as ``(l, b, d)``) is rounded up to whole cells.
    blend : float
        Half-width of the taper strip across each boundary, as a fraction of the shared margin (on the narrower
        side): 1 tapers across the whole shared strip; 0 makes a hard cut at the core boundary.

    Returns
    -------
    list of Tile
        Ordered near to far (distance layer slowest, then b, then l); ``tiles[i].index == i``.

    Raises
    ------
    GridError
        More tiles than cells on an axis, a malformed overlap, or taper strips wider than a core.

    Examples
    --------
    >>> grid = Grid(l=(50, 90, 20), b=(-10, 10, 20), d=(180, 500, 35), ghost_cells=2)
    >>> tiles = plan_tiles(grid, n_l=2, n_b=2, overlap=3)
    >>> len(tiles), tiles[0].grid.shape
    (4, (37, 13, 13))
    """
    if not 0.0 <= blend <= 1.0:
        raise GridError(f"blend: expected a fraction in [0, 1], got {blend}")
    specs = _overlap_specs(overlap)
    region_d = grid.d_edges[grid.ghost_cells :]
    axes = [
        _split_axis(edges, n, spec, name, blend)
        for edges, n, spec, name in zip(
            (grid.l_edges, grid.b_edges, region_d), (n_l, n_b, n_d), specs, AXES, strict=True
        )
    ]
    l_centre = 0.5 * float(grid.l_edges[0] + grid.l_edges[-1])
    counts = (int(n_l), int(n_b), int(n_d))
    tiles = []
    for i_d, (d_cells, d_core, d_taper, d_nb) in enumerate(axes[2]):
        for i_b, (b_cells, b_core, b_taper, b_nb) in enumerate(axes[1]):
            for i_l, (l_cells, l_core, l_taper, l_nb) in enumerate(axes[0]):
                training = Grid(
                    l=grid.l_edges[l_cells[0] : l_cells[1] + 1],
                    b=grid.b_edges[b_cells[0] : b_cells[1] + 1],
                    d=region_d[d_cells[0] : d_cells[1] + 1],
                    ghost_cells=grid.ghost_cells if i_d == 0 else 0,
                )
                tiles.append(
                    Tile(
                        index=len(tiles),
                        position=(i_l, i_b, i_d),
                        counts=counts,
                        grid=training,
                        core=(l_core, b_core, d_core),
                        blend=(l_taper, b_taper, d_taper),
                        neighbours=(l_nb, b_nb, d_nb),
                        l_centre=l_centre,
                    )
                )
    return tiles
