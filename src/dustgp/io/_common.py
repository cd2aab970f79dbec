"""What every dustgp map file shares: the error for an unreadable file, the path type, and the grid and distance
cells rebuilt exactly from stored edges."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..grid import Grid

__all__ = ["MapFileError", "PathType"]

PathType = str | os.PathLike[str]


class MapFileError(ValueError):
    """A file that is not a readable dustgp map: corrupt, truncated, of another kind, or missing a part."""


def _grid_from_edges(l_edges: np.ndarray, b_edges: np.ndarray, d_edges: np.ndarray, ghost_cells: int) -> Grid:
    """The grid with exactly these edges (``d_edges`` from 0, ghost cells included)."""
    grid = Grid(l=l_edges, b=b_edges, d=d_edges[ghost_cells:], ghost_cells=int(ghost_cells))
    # Grid re-derives explicit longitude edges by summing their differences, which can move the last bits; the
    # stored edges are the truth, so put them back (the differences are at the 1e-13 deg level).
    if not np.array_equal(grid.l_edges, l_edges):
        if not np.allclose(grid.l_edges, l_edges, rtol=0.0, atol=1e-9):
            raise ValueError(f"l_edges: stored {l_edges} do not describe a valid grid")
        object.__setattr__(grid, "l_edges", np.array(l_edges, dtype=float))
    if not np.array_equal(grid.d_edges, d_edges):
        raise ValueError(
            f"distance edges: stored ghost-cell edges {d_edges[: ghost_cells + 1]} are not the grid's "
            f"{grid.d_edges[: ghost_cells + 1]}"
        )
    return grid


@contextlib.contextmanager
def _reading(path: PathType, what: str) -> Iterator[None]:
    """Turn the errors of reading a damaged or foreign file into one :class:`MapFileError` naming ``path``."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        yield
    except (MapFileError, FileNotFoundError):
        raise
    except KeyError as exc:
        part = str(exc.args[0] if exc.args else exc)
        detail = part if " " in part else f"{part!r} is missing"  # astropy's own: "Extension 'X' not found."
        raise MapFileError(f"{path}: not a dustgp {what}: {detail}") from exc
    except (OSError, ValueError, TypeError, IndexError, AttributeError, json.JSONDecodeError) as exc:
        raise MapFileError(f"{path}: cannot be read as a dustgp {what} ({type(exc).__name__}: {exc})") from exc


def _native(a: np.ndarray) -> np.ndarray:
    """A native-byte-order copy of a FITS array (FITS is big-endian on disk)."""
    a = np.asarray(a)
    return np.array(a, dtype=a.dtype.newbyteorder("="), copy=True)


def _distance_bins_hdu(grid: Grid) -> fits.BinTableHDU:
    """The FITS ``DISTANCE_BINS`` table: every distance cell (ghost cells included), edges and centre in pc."""
    edges = grid.d_edges
    ghost = np.arange(grid.n_d) < grid.ghost_cells
    hdu = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="INDEX", format="J", array=np.arange(grid.n_d)),
            fits.Column(name="D_NEAR", format="D", unit="pc", array=edges[:-1]),
            fits.Column(name="D_FAR", format="D", unit="pc", array=edges[1:]),
            fits.Column(name="D_CENTER", format="D", unit="pc", array=grid.d_centers),
            fits.Column(name="GHOST", format="L", array=ghost),
        ],
        name="DISTANCE_BINS",
    )
    hdu.header["GHOSTS"] = (grid.ghost_cells, "foreground ghost cells: rows 0 .. GHOSTS-1")
    hdu.header["COMMENT"] = "All distance cells of the map, ghost cells included; INDEX is 0-based."
    return hdu
