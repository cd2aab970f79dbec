"""Beyond one machine: fit a large region as overlapping tiles on a Dask cluster and blend them into one map.

A region too big for one fit (docs: Method §5 costs grow with the number of cells and of inducing points) is split
into tiles in l, b and distance (:func:`plan_tiles`). Each tile is fitted on its own training grid, which is its
*core* (the part of the region it is responsible for) plus a margin of ``overlap`` cells shared with each
neighbour, and predicted on its piece of the prediction grid. :func:`fit_tiles` runs one task per tile on a
``dask.distributed`` cluster and :func:`merge_tiles` blends the pieces into one :class:`~dustgp.dustmap.DustMap`.

Blending
--------
Across each boundary between two neighbouring cores, at ``c``, the two tiles' weights change over the strip
``c - h .. c + h`` (``h = blend ×`` the shared margin on the narrower side) with a cosine taper:

.. math::

    w_{\\mathrm{upper}}(x) = \\sin^2\\!\\Big(\\frac{\\pi}{2}\\,\\frac{x - (c - h)}{2h}\\Big), \\qquad
    w_{\\mathrm{lower}}(x) = 1 - w_{\\mathrm{upper}}(x)

(``sin² t + cos² t = 1`` makes the pair sum to one, and the taper has zero slope at both ends of the strip, so a
merged map has no kink where the strip starts). A tile's weight is the product of its weights along l, b and d;
with a tiling that is a product of per-axis splits, the weights of all tiles sum to one everywhere. The outer
sides of the outermost tiles carry weight 1 out to infinity, so prediction cells beyond the training grid belong
to the nearest tile. Weights reach zero at the far end of a tile's margin: the cells nearest a tile's training
edge, where it knows least (no stars beyond the edge constrain them), count least.

Merged summaries are weighted averages, cell by cell: means exactly (a weighted average of the tiles' posterior
means), standard deviations as the weighted average of the tiles' standard deviations (exact when the tiles'
errors are fully correlated, an upper bound for a linear blend otherwise), and **percentiles are blended too,
which is an approximation**: the weighted average of two distributions' percentiles is not a percentile of
anything in particular. It is exact where one tile holds all the weight (everywhere outside the blend strips),
and close inside them where neighbouring tiles agree. Kept samples are blended the same way (sample k of the
merged map is the weighted average of sample k of each tile; inside a strip this mixes independent draws and so
narrows their spread). Extinction summaries are blended the same way; along l and b this equals integrating the
blended density (the weights do not depend on distance there).

Distance tiles and the foreground
---------------------------------
Only the nearest distance tiles have foreground ghost cells (docs: Method §2). A far tile starts at its training
``d_min`` with no ghost cells; the dust in front of it is taken from the near tiles, which are fitted first
(tiles run layer by layer, near to far). After a distance layer is done, its tiles are merged (with their l, b
weights only) into that layer's extinction map, and each star of the next layer gets a *per-star foreground
subtraction*:

.. math::

    A_i \\to A_i - \\bar A_{\\mathrm{fg}}(l_i, b_i), \\qquad
    \\sigma_i^2 \\to \\sigma_i^2 + \\sigma_{\\mathrm{fg}}^2(l_i, b_i)

where ``A_fg`` and ``sigma_fg`` are the near layer's posterior mean and standard deviation of extinction at the
far tile's ``d_min`` (linear in distance within a cell, as the model's own integral is), in the prediction-grid
column holding the star. Treating the foreground's uncertainty as independent noise per star is an
approximation: stars in one column share the same foreground error. The far tile's predicted extinction is then
shifted by the same foreground at its piece's near edge: mean plus ``A_fg``, variance plus ``sigma_fg²``, and
percentiles by ``A_fg + z_q (sqrt(sigma² + sigma_fg²) - sigma)`` (exact for Gaussian foreground and tile
posteriors, shape-preserving otherwise).

Tasks ship plain numpy arrays both ways (star arrays scattered once per tile, grids as dictionaries, results as
:class:`TilePrediction`); no torch object crosses a process boundary.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import astropy.units as u
import numpy as np

from ._version import __version__
from .catalog import Catalog
from .dustmap import DEFAULT_PERCENTILES, DustMap
from .grid import Grid, GridError

__all__ = [
    "Tile",
    "TileError",
    "TileJob",
    "TilePrediction",
    "TileStars",
    "fit_tile",
    "fit_tiles",
    "merge_tiles",
    "plan_tiles",
]

logger = logging.getLogger(__name__)

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
    return centre + np.mod(np.asarray(l, dtype=float) - centre + 180.0, 360.0) - 180.0


# ------------------------------------------------------------------------------------------------------------
# The plan


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
        from the nearer layer, see the module notes).
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


# ------------------------------------------------------------------------------------------------------------
# What travels to and from a task


@dataclass(frozen=True)
class TileStars:
    """The stars of one tile as plain arrays (deg, deg, pc, mag, mag), foreground already subtracted."""

    l: np.ndarray
    b: np.ndarray
    distance: np.ndarray
    extinction: np.ndarray
    extinction_err: np.ndarray

    def __len__(self) -> int:
        return self.l.size


@dataclass(frozen=True)
class TileJob:
    """Everything a task needs besides the stars, as plain data.

    Attributes
    ----------
    index : int
    name : str
    grid : dict
        Training grid (:meth:`Grid.to_dict`).
    piece : dict
        The tile's piece of the prediction grid (:meth:`Grid.to_dict`).
    fit_options, predict_options : dict
        Keyword arguments of :func:`dustgp.fit` and :func:`dustgp.predict`.
    torch_threads : int or None
        Torch intra-op threads for the task (None leaves the worker's setting).
    """

    index: int
    name: str
    grid: dict[str, Any]
    piece: dict[str, Any]
    fit_options: dict[str, Any] = field(default_factory=dict)
    predict_options: dict[str, Any] = field(default_factory=dict)
    torch_threads: int | None = None


@dataclass
class TilePrediction:
    """A tile's posterior summaries on its piece of the prediction grid, as numpy arrays (see :class:`DustMap`).

    Arrays have the piece's shape ``(n_d, n_b, n_l)`` (percentiles and samples with a leading axis). Extinction
    is integrated from the piece's near edge: from the Sun for the nearest layer, from the piece's first cell for
    farther layers until :func:`fit_tiles` adds the foreground. ``info`` holds JSON-ready facts about the fit.
    """

    density_mean: np.ndarray
    density_std: np.ndarray
    density_percentiles: np.ndarray
    extinction_mean: np.ndarray
    extinction_std: np.ndarray
    extinction_percentiles: np.ndarray
    density_samples: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_map(cls, dmap: DustMap, n_d: int | None = None, info: dict[str, Any] | None = None) -> TilePrediction:
        """The last ``n_d`` distance cells of a map (all by default) as a :class:`TilePrediction`."""
        take = slice(dmap.grid.n_d - (dmap.grid.n_d if n_d is None else n_d), None)
        samples = dmap.density_samples
        return cls(
            density_mean=np.asarray(dmap.density_mean[take]),
            density_std=np.asarray(dmap.density_std[take]),
            density_percentiles=np.asarray(dmap.density_percentiles[:, take]),
            extinction_mean=np.asarray(dmap.extinction_mean[take]),
            extinction_std=np.asarray(dmap.extinction_std[take]),
            extinction_percentiles=np.asarray(dmap.extinction_percentiles[:, take]),
            density_samples=None if samples is None else np.asarray(samples[:, take]),
            info=dict(info or {}),
        )


def fit_tile(job: TileJob, stars: TileStars) -> TilePrediction:
    """The task run for each tile: fit its stars on its training grid and predict on its piece.

    Runs in a worker process; takes and returns plain data only.
    """
    import torch

    from .fitting import fit

    previous_threads = torch.get_num_threads()
    if job.torch_threads is not None:
        torch.set_num_threads(job.torch_threads)
    try:
        started = time.perf_counter()
        catalog = Catalog(stars.l, stars.b, stars.distance, stars.extinction, stars.extinction_err)
        piece = Grid.from_dict(job.piece)
        result = fit(catalog, Grid.from_dict(job.grid), **{"progress": False, **job.fit_options})
        dmap = result.predict(piece, **{"progress": False, **job.predict_options})
        info = {
            "stars": dict(result.stars),
            "iterations": int(result.iterations),
            "stopped_by": result.stopped_by,
            "fit_seconds": float(result.seconds),
            "final_loss": float(result.losses[-1]) if result.losses.size else None,
            "hyperparameters": result.hyperparameters(),
            "task_seconds": time.perf_counter() - started,
        }
        # predict() adds ghost cells to a piece that has none when the training grid has them; the piece's
        # own cells are the last ones along distance either way
        return TilePrediction.from_map(dmap, piece.n_d, info)
    finally:
        if job.torch_threads is not None:
            torch.set_num_threads(previous_threads)


# ------------------------------------------------------------------------------------------------------------
# Merging


class _Accumulator:
    """Weighted sums of tile summaries on a grid, and the sum of weights."""

    def __init__(self, grid: Grid, n_q: int, n_samples: int) -> None:
        shape = grid.shape
        self.grid = grid
        self.weight = np.zeros(shape)
        self.sums = {
            name: np.zeros(shape) for name in ("density_mean", "density_std", "extinction_mean", "extinction_std")
        }
        self.sums["density_percentiles"] = np.zeros((n_q, *shape))
        self.sums["extinction_percentiles"] = np.zeros((n_q, *shape))
        self.samples = np.zeros((n_samples, *shape)) if n_samples else None

    def add(self, index: tuple[slice, slice, slice], weight: np.ndarray, prediction: TilePrediction) -> None:
        sd, sb, sl = index
        self.weight[sd, sb, sl] += weight
        for name, total in self.sums.items():
            value = getattr(prediction, name)
            if value.shape[-3:] != weight.shape:
                raise TileError(f"{name}: expected a piece of shape {weight.shape}, got {value.shape}")
            total[..., sd, sb, sl] += weight * value
        if self.samples is not None:
            if prediction.density_samples is None or prediction.density_samples.shape[0] != self.samples.shape[0]:
                raise TileError(f"density_samples: expected {self.samples.shape[0]} samples from every tile")
            self.samples[:, sd, sb, sl] += weight * prediction.density_samples

    def covered(self) -> np.ndarray:
        return self.weight > 0

    def normalised(self, name: str) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums[name] / self.weight

    def to_map(self, percentiles: np.ndarray, meta: dict[str, Any]) -> DustMap:
        """The normalised sums as a map; every cell must have received weight."""
        if not self.covered().all():
            missing = np.argwhere(~self.covered())
            raise TileError(f"{len(missing)} cells of {self.grid!r} have no tile; first (d, b, l) {missing[0]}")
        samples = None if self.samples is None else (self.samples / self.weight).astype(np.float32)
        return DustMap(
            grid=self.grid,
            percentiles=percentiles,
            density_mean=self.normalised("density_mean"),
            density_std=self.normalised("density_std"),
            density_percentiles=self.normalised("density_percentiles"),
            extinction_mean=self.normalised("extinction_mean"),
            extinction_std=self.normalised("extinction_std"),
            extinction_percentiles=self.normalised("extinction_percentiles"),
            density_samples=samples,
            meta=meta,
        )


def merge_tiles(
    prediction_grid: Grid,
    tiles: Sequence[Tile],
    predictions: Sequence[TilePrediction],
    *,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    meta: Mapping[str, Any] | None = None,
) -> DustMap:
    """Blend per-tile predictions into one map with the tiles' weights (see the module notes).

    Parameters
    ----------
    prediction_grid : Grid
        The grid of the merged map.
    tiles : sequence of Tile
    predictions : sequence of TilePrediction
        One per tile, on that tile's :meth:`Tile.piece` of ``prediction_grid``, with extinction from the Sun
        (foreground included).
    percentiles : sequence of float
        Levels (0-100) of the predictions' percentile arrays.
    meta : mapping, optional
        Provenance stored in the map.

    Returns
    -------
    DustMap

    Raises
    ------
    TileError
        A piece of the wrong shape, or a cell of the grid that no tile covers.
    """
    if len(tiles) != len(predictions):
        raise TileError(f"expected one prediction per tile, got {len(predictions)} for {len(tiles)} tiles")
    if not tiles:
        raise TileError("expected at least one tile")
    q = np.asarray(percentiles, dtype=float)
    first = predictions[0].density_samples
    acc = _Accumulator(prediction_grid, q.size, 0 if first is None else first.shape[0])
    for tile, prediction in zip(tiles, predictions, strict=True):
        _, index = tile.piece(prediction_grid)
        try:
            acc.add(index, tile.piece_weights(prediction_grid, index), prediction)
        except TileError as exc:
            raise TileError(f"{tile.name}: {exc}") from exc
    return acc.to_map(q, dict(meta or {}))


@dataclass(frozen=True)
class _Foreground:
    """A distance layer's merged extinction (mean, std) at cell edges of the prediction grid, per column."""

    grid: Grid
    d_edges: np.ndarray  # (n_k + 1,)
    mean: np.ndarray  # (n_k + 1, n_b, n_l), mag
    std: np.ndarray  # (n_k + 1, n_b, n_l), mag

    @classmethod
    def from_layer(cls, acc: _Accumulator, d_cells: tuple[int, int]) -> _Foreground:
        k0, k1 = d_cells
        grid = acc.grid
        rho = acc.normalised("density_mean")[k0:k1]
        a_mean = acc.normalised("extinction_mean")[k0:k1]
        a_std = acc.normalised("extinction_std")[k0:k1]
        if not np.all(np.isfinite(a_mean)):
            raise TileError(f"the merged layer does not cover every column of {grid!r}")
        # the near edge of the layer's first cell: extinction is linear within a cell, so subtract that cell's
        # mean density times its length (exactly 0 at the Sun); its spread is taken as the first cell's
        near_mean = a_mean[0] - rho[0] * grid.path_lengths[k0]
        return cls(
            grid=grid,
            d_edges=grid.d_edges[k0 : k1 + 1],
            mean=np.concatenate([near_mean[None], a_mean]),
            std=np.concatenate([a_std[:1], a_std]),
        )

    def at(self, d: float, what: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of extinction (mag) at distance ``d`` (pc), shape ``(n_b, n_l)``."""
        lo, hi = self.d_edges[0], self.d_edges[-1]
        if not lo - 1e-9 <= d <= hi + 1e-9:
            raise TileError(
                f"{what}: needs the foreground at {d:g} pc, outside the nearer layer's prediction ({lo:g}..{hi:g} "
                "pc); the prediction grid must cover the training grid's distances"
            )
        k = int(np.clip(np.searchsorted(self.d_edges, d, side="right"), 1, self.d_edges.size - 1))
        t = (d - self.d_edges[k - 1]) / (self.d_edges[k] - self.d_edges[k - 1])
        mean = (1 - t) * self.mean[k - 1] + t * self.mean[k]
        std = (1 - t) * self.std[k - 1] + t * self.std[k]
        return mean, std

    def columns(self, l: np.ndarray, b: np.ndarray, l_centre: float) -> tuple[np.ndarray, np.ndarray]:
        """Prediction-grid column ``(i_b, i_l)`` holding each position (nearest column when off the grid)."""
        grid = self.grid
        l_u = _unwrap(l, l_centre)
        edges_u = _unwrap(grid.l_edges[0], l_centre) + (grid.l_edges - grid.l_edges[0])
        i_l = np.clip(np.searchsorted(edges_u, l_u, side="right") - 1, 0, grid.n_l - 1)
        i_b = np.clip(np.searchsorted(grid.b_edges, b, side="right") - 1, 0, grid.n_b - 1)
        return i_b, i_l


def _add_foreground(prediction: TilePrediction, mean: np.ndarray, std: np.ndarray, q: np.ndarray) -> TilePrediction:
    """Shift a far tile's extinction by a foreground (mean, std per column; see the module notes)."""
    total_std = np.hypot(prediction.extinction_std, std)
    z = np.array([NormalDist().inv_cdf(p) for p in np.clip(q / 100.0, 1e-9, 1 - 1e-9)])
    widen = z.reshape(-1, 1, 1, 1) * (total_std - prediction.extinction_std)
    return dataclasses.replace(
        prediction,
        extinction_mean=prediction.extinction_mean + mean,
        extinction_std=total_std,
        extinction_percentiles=prediction.extinction_percentiles + mean + widen,
    )


# ------------------------------------------------------------------------------------------------------------
# Running on Dask


@contextmanager
def _dask_client(client: Any) -> Iterator[Any]:
    """A ``distributed.Client`` for ``client``: None (a new local cluster), an address, a Client or a cluster."""
    from distributed import Client, LocalCluster

    if client is None:
        logger.info("starting a LocalCluster of 2 worker processes, 1 thread each")
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
            Client(cluster) as own,
        ):
            yield own
    elif isinstance(client, Client):
        yield client
    elif isinstance(client, str) or hasattr(client, "scheduler_address"):  # an address, or a (jobqueue) cluster
        with Client(client) as own:
            yield own
    else:
        raise TypeError(
            "client: expected None, a scheduler address, a distributed.Client or a cluster object "
            f"(LocalCluster, dask-jobqueue), got {type(client).__name__}"
        )


TileTask = Callable[[TileJob, TileStars], TilePrediction]


def _run_layer(
    client: Any,
    task: TileTask,
    work: list[tuple[Tile, TileJob, TileStars]],
    retries: int,
    done_before: int,
    n_total: int,
) -> dict[int, tuple[TilePrediction, int]]:
    """Run one distance layer's tasks; resubmit a failed task up to ``retries`` times, then raise naming it."""
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    pending: dict[Any, tuple[Tile, TileJob, Any, int]] = {}
    results: dict[int, tuple[TilePrediction, int]] = {}

    def submit(tile: Tile, job: TileJob, stars: Any, attempt: int) -> Any:
        future = client.submit(task, job, stars, key=f"dustgp-tile-{tile.index}-{token}-{attempt}", pure=False)
        pending[future] = (tile, job, stars, attempt)
        return future

    scattered = []
    started = time.perf_counter()
    try:
        for tile, job, stars in work:
            # scattered once per tile, so that a retry does not send the stars again
            stars_future = client.scatter(stars, hash=False)
            scattered.append(stars_future)
            submit(tile, job, stars_future, 0)
        queue = as_completed(list(pending))
        for future in queue:
            tile, job, stars, attempt = pending.pop(future)
            try:
                prediction = future.result()
            except Exception as exc:  # any failure of the task, including a lost worker (KilledWorker)
                if attempt < retries:
                    logger.warning(
                        "%s failed (attempt %d of %d): %r; retrying", tile.name, attempt + 1, retries + 1, exc
                    )
                    queue.add(submit(tile, job, stars, attempt + 1))
                    continue
                raise TileError(f"{tile.name} failed {attempt + 1} time(s); last error: {exc!r}") from exc
            results[tile.index] = (prediction, attempt + 1)
            facts = prediction.info
            logger.info(
                "%d/%d done: %s: %s stars, %s iterations, %.1f s since the layer started",
                done_before + len(results),
                n_total,
                tile.name,
                facts.get("stars", {}).get("used", "?"),
                facts.get("iterations", "?"),
                time.perf_counter() - started,
            )
    finally:
        for future in pending:
            future.cancel()
        for future in scattered:
            future.release()
    return results


def _jsonable(options: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in options.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, tuple | np.ndarray):
            value = np.asarray(value).tolist()
        out[key] = value if isinstance(value, str | int | float | bool | list | dict | type(None)) else repr(value)
    return out


def _tile_fit_options(tile: Tile, stars: TileStars, fit_options: dict[str, Any]) -> dict[str, Any]:
    """A far tile's options get an initial mean density from its own sightline segments, unless one is given.

    :func:`dustgp.fit` starts the mean at log10 median(A_i / d_i), the right guess when the integral starts at the
    Sun. A far tile's foreground-subtracted extinction accumulates from its ``d_min`` only, and dividing it by the
    whole distance would start the mean far too low.
    """
    config = fit_options.get("config")
    if tile.layer == 0 or fit_options.get("mean") is not None or getattr(config, "mean", None) is not None:
        return fit_options
    ratio = stars.extinction / np.maximum(stars.distance - tile.grid.d_min, 1e-9)
    positive = ratio[(ratio > 0) & (stars.distance > tile.grid.d_min)]
    if positive.size == 0:
        return fit_options
    return {**fit_options, "mean": float(np.log10(np.median(positive)))}


def fit_tiles(
    catalog: Catalog,
    grid: Grid,
    *,
    tiles: Sequence[Tile],
    prediction_grid: Grid | None = None,
    client: Any = None,
    retries: int = 2,
    fit_options: Mapping[str, Any] | None = None,
    predict_options: Mapping[str, Any] | None = None,
    torch_threads: int | None = None,
    task: TileTask | None = None,
) -> DustMap:
    """Fit a region tile by tile on a Dask cluster and merge the tiles into one map.

    Parameters
    ----------
    catalog : Catalog
        All stars of the region; each tile takes those inside its training grid (:meth:`Tile.contains`).
    grid : Grid
        The region's training grid, the one ``tiles`` were planned on.
    tiles : sequence of Tile
        From :func:`plan_tiles`.
    prediction_grid : Grid, optional
        Grid of the merged map; default ``grid.refined(2.5)``. It must cover the training grid's distances when
        there is more than one distance layer (far tiles read their foreground from it).
    client : None, str, distributed.Client or cluster
        Where to run: None starts (and afterwards closes) a ``LocalCluster(n_workers=2, threads_per_worker=1,
        processes=True)``; a scheduler address (``"tcp://host:8786"``); an existing Client (left open); or a
        cluster object such as a ``dask_jobqueue.SLURMCluster`` (scaled by its owner).
    retries : int
        Times a failed tile task is resubmitted before the call gives up.
    fit_options : mapping, optional
        Keyword arguments of :func:`dustgp.fit` for every tile (e.g. ``inducing_points=1000``, which is per
        tile).
    predict_options : mapping, optional
        Keyword arguments of :func:`dustgp.predict` for every tile (``samples``, ``percentiles``,
        ``keep_samples``, ``seed``, ...). Unlike ``predict``, a mosaic keeps no joint samples unless
        ``keep_samples`` is given.
    torch_threads : int, optional
        Torch threads in each task (default: the worker's setting; a LocalCluster's workers get 1).
    task : callable, optional
        ``task(job, stars) -> TilePrediction`` run per tile; default :func:`fit_tile`. Must be importable or
        picklable by the workers.

    Returns
    -------
    DustMap
        On ``prediction_grid``; ``meta["tiles"]`` records each tile's fit (stars, iterations, hyperparameters,
        attempts).

    Raises
    ------
    TileError
        A tile without stars, or a tile whose task still fails after ``retries`` resubmissions (the message
        names the tile and carries the last error).

    Notes
    -----
    Distance layers run one after the other, near to far; the tiles of a layer run in parallel. See the module
    notes for the foreground of far tiles and for how summaries are blended. A far tile fitted without an
    explicit ``mean`` starts its mean at log10 median(A_i / (d_i - d_min)) of its foreground-subtracted stars,
    the analogue of :func:`dustgp.fit`'s own start for an integral that begins at the tile's ``d_min``.

    Inducing points, iterations and every other fit option apply per tile: a plan of ``k`` tiles with
    ``inducing_points=M`` uses ``k·M`` inducing points in all.

    Examples
    --------
    >>> tiles = plan_tiles(grid, n_l=4, n_b=2, n_d=2, overlap=3)                        # doctest: +SKIP
    >>> dmap = fit_tiles(catalog, grid, tiles=tiles, fit_options={"inducing_points": 1000},
    ...                  predict_options={"samples": 200, "keep_samples": 20})          # doctest: +SKIP
    >>> from dask_jobqueue import SLURMCluster                                          # doctest: +SKIP
    >>> cluster = SLURMCluster(cores=4, memory="16GB"); cluster.scale(jobs=8)           # doctest: +SKIP
    >>> dmap = fit_tiles(catalog, grid, tiles=tiles, client=cluster)                    # doctest: +SKIP
    """
    if retries < 0:
        raise ValueError(f"retries: expected >= 0, got {retries}")
    if not tiles:
        raise TileError("expected at least one tile")
    fit_options = dict(fit_options or {})
    predict_options = dict(predict_options or {})
    prediction_grid = grid.refined(2.5) if prediction_grid is None else prediction_grid
    q = np.asarray(predict_options.get("percentiles", DEFAULT_PERCENTILES), dtype=float)
    # a mosaic keeps samples only when asked (a custom task may return tiles without them), and every tile then
    # keeps as many; without keep_samples the tiles keep none rather than predict()'s default
    keep = int(predict_options.setdefault("keep_samples", 0))
    task = fit_tile if task is None else task
    ordered = sorted(tiles, key=lambda t: t.index)
    layers = sorted({t.layer for t in ordered})
    l_centre = ordered[0].l_centre
    for tile in ordered:
        if tile.grid.d_max > grid.d_max + 1e-9 or tile.grid.d_min < grid.d_min - 1e-9:
            raise TileError(f"{tile.name}: its training grid {tile.grid!r} lies outside {grid!r}")

    final = _Accumulator(prediction_grid, q.size, keep)
    foreground: _Foreground | None = None
    records: list[dict[str, Any]] = []
    l_all, b_all, d_all = catalog.l, catalog.b, catalog.distance
    logger.info("fitting %d tiles in %d distance layer(s) on %r", len(ordered), len(layers), prediction_grid)
    with _dask_client(client) as dask_client:
        for layer in layers:
            members = [t for t in ordered if t.layer == layer]
            work = []
            pieces = {}
            for tile in members:
                mask = tile.contains(l_all, b_all, d_all)
                if not mask.any():
                    raise TileError(f"{tile.name} holds no star of the catalogue ({len(catalog)} stars)")
                extinction = catalog.extinction[mask].astype(float)
                sigma = catalog.extinction_err[mask].astype(float)
                if tile.layer > 0:
                    if foreground is None:
                        raise TileError(f"{tile.name}: no nearer distance layer to take the foreground from")
                    fg_mean, fg_std = foreground.at(tile.grid.d_min, tile.name)
                    i_b, i_l = foreground.columns(l_all[mask], b_all[mask], l_centre)
                    extinction = extinction - fg_mean[i_b, i_l]
                    sigma = np.hypot(sigma, fg_std[i_b, i_l])
                piece, index = tile.piece(prediction_grid)
                pieces[tile.index] = (piece, index)
                stars = TileStars(l_all[mask], b_all[mask], d_all[mask], extinction, sigma)
                job = TileJob(
                    index=tile.index,
                    name=tile.name,
                    grid=tile.grid.to_dict(),
                    piece=piece.to_dict(),
                    fit_options=_tile_fit_options(tile, stars, fit_options),
                    predict_options=predict_options,
                    torch_threads=torch_threads,
                )
                work.append((tile, job, stars))
            logger.info("distance layer %d: submitting %d tiles", layer, len(work))
            results = _run_layer(dask_client, task, work, retries, len(records), len(ordered))

            layer_acc = _Accumulator(prediction_grid, q.size, 0)
            d_ranges = set()
            for tile, _, stars in work:
                prediction, attempts = results[tile.index]
                piece, index = pieces[tile.index]
                if tile.layer > 0:
                    assert foreground is not None
                    fg_mean, fg_std = foreground.at(piece.d_edges[0], tile.name)
                    prediction = _add_foreground(prediction, fg_mean[index[1:]], fg_std[index[1:]], q)
                try:
                    layer_acc.add(index, tile.piece_weights(prediction_grid, index, axes="lb"), prediction)
                    final.add(index, tile.piece_weights(prediction_grid, index), prediction)
                except TileError as exc:
                    raise TileError(f"{tile.name}: {exc}") from exc
                d_ranges.add((index[0].start, index[0].stop))
                records.append(
                    {
                        "index": tile.index,
                        "name": tile.name,
                        "position": list(tile.position),
                        "training_grid": tile.grid.to_dict(),
                        "core": [list(c) for c in tile.core],
                        "stars_selected": len(stars),
                        "attempts": attempts,
                        **prediction.info,
                    }
                )
            if len(d_ranges) != 1:
                raise TileError(f"distance layer {layer}: its tiles cover different distance ranges {d_ranges}")
            foreground = _Foreground.from_layer(layer_acc, d_ranges.pop())

    meta = {
        "dustgp_version": __version__,
        "config": _jsonable(fit_options),
        "predict_options": _jsonable(predict_options),
        "seed": int(predict_options.get("seed", 0)),
        "training_grid": grid.to_dict(),
        "tiling": {
            "counts": list(ordered[0].counts),
            "tiles": len(ordered),
            "blend": "cosine taper; means and stds weighted-averaged; percentiles blended (approximation)",
            "foreground": "far tiles: per-star subtraction of the nearer layer's extinction at d_min, "
            "variance added to sigma^2",
        },
        "tiles": records,
        "hyperparameters": {str(r["index"]): r.get("hyperparameters") for r in records},
    }
    return final.to_map(q, meta)
