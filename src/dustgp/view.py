"""An interactive map page: one self-contained HTML file to explore a saved map in a browser.

``dustgp view map.nc -o map.html`` (or :func:`write_view`) writes a page that opens from disk with no server
and no network: a distance slider over the density slices, the extinction integrated to the chosen distance,
and a sightline panel with the posterior mean and 16-84% band of density and extinction for the pixel a user
clicks. Galactic longitude increases to the left, as on the sky.

Why hand-written canvas JavaScript rather than a plotting library: the page needs two colour images, a slider
and two line plots with bands, and must work from disk without a network. Plotly or Bokeh would have to be
inlined (their standalone bundles are megabytes of script before any data) and kept in step with a Python
package's version; the script here is about 17 kB, so the page is essentially its data, and a slider step redraws
two 100 × 100 slices into ``<canvas>`` elements without rebuilding any plot object.

The map travels in the page as six cubes: density mean, 16th and 84th percentiles in cells, and extinction mean,
16th and 84th percentiles to each cell's far edge. The means are stored as 16-bit codes of log10(mean), with a
range per distance slice (floored 6 dex below the slice's largest value), so that the relative error of a shown
mean is at most ``10**(range / 131068) - 1`` (below 0.01% for a slice spanning 4 dex); the band edges as 8-bit
codes of log10(percentile / mean), also with a range per slice, so that their error is at most 1/508 of the
range of log10(percentile / mean) over that slice. All codes are differenced along distance (neighbouring slices
are alike) and deflated (zlib) into one base64 block that the browser inflates with ``DecompressionStream``
(Chromium 80, Firefox 113, Safari 16.4 and later). Before compression that is 8 bytes per cell (2 for each
mean, 1 for each band edge); ``benchmarks/bench_view.py`` measures the page of a 100 × 100 × 107 map.

Reading the map and building the page import no torch (numpy, astropy, xarray and matplotlib's colour maps).
"""

from __future__ import annotations

import base64
import html
import json
import re
import zlib
from importlib.resources import files
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps

from ._atomic import atomic_path
from ._version import __version__
from .io import read_map
from .posterior_map import PosteriorMap

__all__ = [
    "BAND",
    "ViewError",
    "decode_cube",
    "decode_payload",
    "encode_cube",
    "render_html",
    "view_payload",
    "write_view",
]

#: Percentile levels of the band drawn in the sightline panel.
BAND = (16.0, 84.0)
#: Lowest mean kept on a slice's log scale, in dex below the slice's largest (fainter cells show the floor value).
LOG_RANGE_DEX = 6.0
#: Bits per stored mean and per stored band edge (see the module notes for the precision they give).
MEAN_BITS = 16
BAND_BITS = 8
#: Names of the cubes carried by the page, in order.
CUBES = ("density_mean", "density_lo", "density_hi", "extinction_mean", "extinction_lo", "extinction_hi")
_REFERENCE = "Dharmawardena, Bailer-Jones, Fouesneau & Foreman-Mackey 2022, A&A 658, A166"


class ViewError(ValueError):
    """A map that the page cannot show (non-uniform pixels, a band that is not stored, ...)."""


def _uniform(edges: np.ndarray, name: str) -> None:
    steps = np.diff(np.asarray(edges, dtype=float))
    if not np.allclose(steps, steps[0], rtol=1e-6, atol=0.0):
        raise ViewError(
            f"{name}_edges: expected uniform spacing to draw pixels on the page, got steps from {steps.min():g} "
            f"to {steps.max():g} deg"
        )


def encode_cube(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, bits: int) -> np.ndarray:
    """Quantise a cube to unsigned integer codes, with a range per distance slice (the page's storage format).

    Parameters
    ----------
    x : numpy.ndarray, shape (n_d, n_b, n_l)
        The quantity to store (the page stores log10 of the means and log10 of band / mean); non-finite values
        become code 0 ("no value").
    lo, hi : numpy.ndarray, shape (n_d,)
        Range of each slice, mapped linearly onto codes ``1 .. 2**bits - 1`` (values outside are clipped).
    bits : {8, 16}

    Returns
    -------
    numpy.ndarray of uint8 or little-endian uint16, shape (n_d, n_b, n_l)
    """
    if bits not in (8, 16):
        raise ViewError(f"bits: expected 8 or 16, got {bits}")
    top = 2**bits - 2
    x = np.asarray(x, dtype=float)
    lo3, span3 = _range3(lo, hi)
    finite = np.isfinite(x)
    codes = np.clip(np.rint((np.where(finite, x, 0.0) - lo3) / span3 * top), 0, top) + 1
    codes[~finite] = 0
    return codes.astype(np.uint8 if bits == 8 else np.dtype("<u2"))


def decode_cube(codes: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, bits: int) -> np.ndarray:
    """Inverse of :func:`encode_cube`, as the page computes it: the code's value, NaN for code 0."""
    top = 2**bits - 2
    lo3, span3 = _range3(lo, hi)
    x = lo3 + (np.asarray(codes, dtype=float) - 1.0) / top * span3
    return np.where(np.asarray(codes) == 0, np.nan, x)


def _range3(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = np.asarray(lo, dtype=float)[:, None, None]
    span = np.asarray(hi, dtype=float)[:, None, None] - lo
    return lo, np.where(span > 0, span, 1.0)


def _slice_range(x: np.ndarray, *, floor_dex: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest finite value of each distance slice (0, 0 for a slice with none)."""
    finite = np.isfinite(x)
    hi = np.where(finite, x, -np.inf).max(axis=(1, 2))
    lo = np.where(finite, x, np.inf).min(axis=(1, 2))
    empty = ~np.isfinite(hi)
    hi[empty], lo[empty] = 0.0, 0.0
    if floor_dex is not None:
        lo = np.maximum(lo, hi - floor_dex)
    return lo, hi


def _band(dmap: PosteriorMap, kind: str, level: float) -> np.ndarray:
    """A percentile cube, stored or computed from the kept samples."""
    hit = np.flatnonzero(np.isclose(dmap.percentiles, level))
    if hit.size:
        table = dmap.density_percentiles if kind == "density" else dmap.extinction_percentiles
        return np.asarray(table[hit[0]])
    if dmap.n_samples == 0:
        raise ViewError(
            f"{kind} percentile {level:g}: expected it among the stored levels {dmap.percentiles.tolist()} or "
            "posterior samples to compute it from; the map has neither"
        )
    pick = dmap.density if kind == "density" else dmap.extinction
    return np.asarray(pick(level).value)


def view_payload(dmap: PosteriorMap, *, title: str | None = None) -> tuple[dict[str, Any], bytes]:
    """The page's description of a map and its compressed cube block.

    Parameters
    ----------
    dmap : PosteriorMap
        A map with uniform l and b spacing, with 16th and 84th percentiles stored (or samples to compute them).
    title : str, optional
        Page title; default from the grid.

    Returns
    -------
    meta : dict
        JSON-serialisable: grid edges (deg, deg, pc), ghost cells, per-cube bits and per-slice ranges, colour
        maps and limits, provenance.
    block : bytes
        The six cubes of :data:`CUBES`, each ``(n_d, n_b, n_l)``, as codes (see the module notes) differenced
        along distance modulo ``2**bits``, 16-bit codes stored low bytes first then high bytes; all deflated
        with zlib.

    Raises
    ------
    ViewError
        Non-uniform l or b spacing, or a 16th/84th percentile that is neither stored nor computable.
    """
    grid = dmap.grid
    _uniform(grid.l_edges, "l")
    _uniform(grid.b_edges, "b")
    with np.errstate(divide="ignore", invalid="ignore"):
        # log10 of a non-positive value is stored as "no value" (NaN), except zero: the slice's floor
        def log10(a: np.ndarray) -> np.ndarray:
            a = np.asarray(a, dtype=float)
            return np.where(a > 0, np.log10(np.where(a > 0, a, 1.0)), np.where(a == 0, -np.inf, np.nan))

        quantities = {}
        for kind, mean in (("density", dmap.density_mean), ("extinction", dmap.extinction_mean)):
            log_mean = log10(mean)
            quantities[f"{kind}_mean"] = log_mean
            for name, level in zip(("lo", "hi"), BAND, strict=True):
                quantities[f"{kind}_{name}"] = log10(_band(dmap, kind, level)) - np.where(
                    np.isfinite(log_mean), log_mean, np.nan
                )

    cubes, parts = [], []
    for name in CUBES:
        x = quantities[name]
        is_mean = name.endswith("_mean")
        bits = MEAN_BITS if is_mean else BAND_BITS
        lo, hi = _slice_range(np.where(np.isneginf(x), np.nan, x), floor_dex=LOG_RANGE_DEX if is_mean else None)
        # the ranges travel as JSON text: encode with exactly the numbers the page will read, widened outwards
        lo, hi = np.floor(lo * 1e9) / 1e9, np.ceil(hi * 1e9) / 1e9
        x = np.where(np.isneginf(x), lo[:, None, None], x)  # zeros sit at the floor
        codes = encode_cube(x, lo, hi, bits=bits)
        # differences along distance, modulo 2**bits: neighbouring slices are alike, so these deflate better
        codes = np.diff(codes, axis=0, prepend=np.zeros((1, *codes.shape[1:]), dtype=codes.dtype))
        raw = np.ascontiguousarray(codes).tobytes()
        if bits == 16:  # low bytes, then high bytes: the nearly constant high bytes deflate on their own
            raw = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 2).T.tobytes()
        parts.append(raw)
        cubes.append(
            {
                "name": name,
                "bits": bits,
                "delta": True,
                "relative_to": None if is_mean else name.split("_")[0] + "_mean",
                "lo": lo.tolist(),
                "hi": hi.tolist(),
            }
        )
    block = zlib.compress(b"".join(parts), 6)

    # colour maps for the two images: 256 RGB triples each, as hex
    def lut(name: str) -> str:
        rgb = (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
        return rgb.tobytes().hex()

    # colour limits fixed over all distances so that slices compare (region cells; the lowest 0.5% clipped)
    region = slice(grid.ghost_cells, None) if grid.ghost_cells < grid.n_d else slice(None)
    log_rho = quantities["density_mean"][region]
    log_rho = log_rho[np.isfinite(log_rho)]
    rho_limits = [float(np.percentile(log_rho, 0.5)), float(log_rho.max())] if log_rho.size else [-4.0, -1.0]
    total = np.asarray(dmap.extinction_mean[-1], dtype=float)
    a_max = float(np.nanpercentile(total, 99.5)) if np.isfinite(total).any() else 1.0

    meta: dict[str, Any] = {
        "title": title
        or f"dustgp map: l {grid.l_edges[0]:g}..{grid.l_edges[-1]:g} deg, b {grid.b_edges[0]:g}..{grid.b_edges[-1]:g} "
        f"deg, d {grid.d_min:g}..{grid.d_max:g} pc",
        "grid": repr(grid),
        "l_edges": np.asarray(grid.l_edges, dtype=float).tolist(),
        "b_edges": np.asarray(grid.b_edges, dtype=float).tolist(),
        "d_edges": np.asarray(grid.d_edges, dtype=float).tolist(),
        "ghost_cells": int(grid.ghost_cells),
        "shape": [grid.n_d, grid.n_b, grid.n_l],
        "cubes": cubes,
        "band": list(BAND),
        "colour": {
            "density": {"lut": lut("viridis"), "log10_limits": rho_limits},
            "extinction": {"lut": lut("magma"), "limits": [0.0, a_max if a_max > 0 else 1.0]},
        },
        "provenance": {
            "dustgp_version": str(dmap.meta.get("dustgp_version", "unknown")),
            "page_dustgp_version": __version__,
            "seed": dmap.meta.get("seed"),
            "samples": dmap.meta.get("samples"),
            "reference": _REFERENCE,
        },
    }
    return meta, block


def decode_payload(meta: dict[str, Any], block: bytes) -> dict[str, np.ndarray]:
    """The values the page shows, decoded in Python exactly as its script decodes them (for checks).

    Returns
    -------
    dict of numpy.ndarray, shape (n_d, n_b, n_l)
        :data:`CUBES` names to density (mag/pc) and extinction (mag) values; NaN where there is no value.
    """
    n_d, n_b, n_l = meta["shape"]
    raw = zlib.decompress(block)
    out: dict[str, np.ndarray] = {}
    offset = 0
    for spec in meta["cubes"]:
        size = n_d * n_b * n_l * spec["bits"] // 8
        part = np.frombuffer(raw[offset : offset + size], dtype=np.uint8)
        offset += size
        if spec["bits"] == 16:
            part = part.reshape(2, -1).T.copy().view("<u2").ravel()
        codes = part.reshape(n_d, n_b, n_l)
        if spec["delta"]:
            codes = np.cumsum(codes, axis=0, dtype=codes.dtype)  # wraps modulo 2**bits, as written
        x = decode_cube(codes, np.asarray(spec["lo"]), np.asarray(spec["hi"]), bits=spec["bits"])
        base = out[spec["relative_to"]] if spec["relative_to"] else 1.0
        out[spec["name"]] = base * 10.0**x
    return out


def render_html(dmap: PosteriorMap, *, title: str | None = None, source: str | None = None) -> str:
    """The self-contained page for a map, as text.

    Parameters
    ----------
    dmap : PosteriorMap
    title : str, optional
    source : str, optional
        Where the map came from (shown on the page), e.g. its file name.

    Returns
    -------
    str
        HTML with its script, style, colour maps and data inline; no external resource is referenced.
    """
    meta, block = view_payload(dmap, title=title)
    meta["source"] = source
    resources = files("dustgp") / "data"
    template = (resources / "view.html").read_text(encoding="utf-8")
    script = (resources / "view.js").read_text(encoding="utf-8")
    # "</" cannot appear inside the JSON (it would end the <script> element); json escapes nothing of it
    meta_json = json.dumps(meta, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    fields = {
        "TITLE": html.escape(meta["title"]),
        "META": meta_json,
        "DATA": base64.b64encode(block).decode("ascii"),
        "SCRIPT": script,
    }
    # one pass, so that text put in (a title, the script) is never searched for placeholders itself
    return re.sub(r"__(TITLE|META|DATA|SCRIPT)__", lambda m: fields[m.group(1)], template)


def write_view(
    dmap: PosteriorMap | str | PathLike[str],
    path: str | PathLike[str],
    *,
    overwrite: bool = False,
    title: str | None = None,
) -> Path:
    """Write the interactive page of a map to an HTML file.

    Parameters
    ----------
    dmap : PosteriorMap, str or os.PathLike
        A map, or a map file that :func:`dustgp.io.read_map` reads (NetCDF or FITS cube).
    path : str or os.PathLike
        The HTML file to write.
    overwrite : bool
        Replace an existing file.
    title : str, optional

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ViewError
        A map the page cannot show (a HEALPix map, non-uniform pixels, no 16-84% band).
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    source = None
    if isinstance(dmap, str | PathLike):
        source = Path(dmap).name
        dmap = read_map(dmap)
    if not isinstance(dmap, PosteriorMap):
        raise ViewError(f"map: expected a (distance, b, l) cube map, got a {type(dmap).__name__}")
    text = render_html(dmap, title=title, source=source)
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
