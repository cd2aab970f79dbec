"""The Gaia DR3 query: a region of the sky, quality cuts and sky chunks, written as ADQL for ``gaiadr3.gaia_source``.

Gaia DR3's GSP-Phot (Andrae et al. 2023, A&A 674, A27) gives, for some 470 million stars, the monochromatic
extinction ``azero_gspphot`` (A0 at 541.4 nm, mag) and the distance ``distance_gspphot`` (pc), each with its
16th and 84th percentiles (``*_lower``, ``*_upper``), in the table :data:`GAIA_TABLE`. :class:`Region` (bounds,
padding), :class:`GaiaCuts` (quality cuts a user can change), :func:`sky_chunks` and :func:`adql_query` build the
query text; nothing here needs the network.

Why the queries look as they do: ``gaia_source`` is indexed on (ra, dec), not on (l, b). Each chunk's query
therefore first selects an ICRS circle that encloses the chunk (an indexed cone search), then cuts the exact
Galactic box, so the archive never scans the whole table. Chunks are half-open in l and b (``lo <= x < hi``),
so a star on a shared edge comes back once. Numbers are written with a fixed number of digits, so the text of a
query, and with it the key of its cached result (:mod:`dustgp.catalog.gaia_cache`), is the same on every machine.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_type_hints

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord

from ..grid import Grid

__all__ = [
    "CATALOG_COLUMNS",
    "COLUMNS",
    "COLUMN_UNITS",
    "GAIA_TABLE",
    "MAX_CHUNK_DEG",
    "DistanceFrom",
    "GaiaCuts",
    "Region",
    "SkyChunk",
    "adql_query",
    "cut_keys",
    "sky_chunks",
]

#: The table queried.
GAIA_TABLE = "gaiadr3.gaia_source"
#: Columns selected, in order: identity, position (deg), astrometry (mas), RUWE, G (mag), and the GSP-Phot
#: distance (pc) and extinction A0 (mag) with their 16th (``_lower``) and 84th (``_upper``) percentiles.
COLUMNS = (
    "source_id",
    "l",
    "b",
    "parallax",
    "parallax_error",
    "ruwe",
    "phot_g_mean_mag",
    "distance_gspphot",
    "distance_gspphot_lower",
    "distance_gspphot_upper",
    "azero_gspphot",
    "azero_gspphot_lower",
    "azero_gspphot_upper",
)
#: Units of the selected columns (the archive's; applied where a result arrives without them).
COLUMN_UNITS = {
    "l": u.deg,
    "b": u.deg,
    "parallax": u.mas,
    "parallax_error": u.mas,
    "phot_g_mean_mag": u.mag,
    "distance_gspphot": u.pc,
    "distance_gspphot_lower": u.pc,
    "distance_gspphot_upper": u.pc,
    "azero_gspphot": u.mag,
    "azero_gspphot_lower": u.mag,
    "azero_gspphot_upper": u.mag,
}
_EXTINCTION = {"extinction": "azero_gspphot", "extinction_err": ("azero_gspphot_lower", "azero_gspphot_upper")}
#: Column mapping of :meth:`Catalog.from_table` / :meth:`Catalog.read` for a table of these columns, by the
#: distance used: GSP-Phot's (with its 16th/84th percentiles) or the parallax with its error (the distance
#: posterior under an exponentially decreasing space density prior, see :meth:`Catalog.from_table`).
CATALOG_COLUMNS: dict[str, dict[str, Any]] = {
    "gspphot": {
        "l": "l",
        "b": "b",
        "distance": "distance_gspphot",
        "distance_err": ("distance_gspphot_lower", "distance_gspphot_upper"),
        **_EXTINCTION,
    },
    "parallax": {"l": "l", "b": "b", "parallax": "parallax", "parallax_err": "parallax_error", **_EXTINCTION},
}
DistanceFrom = Literal["gspphot", "parallax"]

#: Largest side of a sky chunk, deg: a chunk's enclosing cone stays small enough for the archive's index.
MAX_CHUNK_DEG = 30.0
#: Digits of the numbers written into a query: the text, and so the cache key, is the same on every machine.
_DIGITS = 10
# A GSP-Phot library name as the archive spells them (MARCS, PHOENIX, A, OB, ...): nothing that could end a
# quoted ADQL string.
_LIBNAME = re.compile(r"^[A-Za-z0-9_+-]+$")


def _num(x: float) -> str:
    return f"{float(x):.{_DIGITS}g}"


def _pair(value: Sequence[float], name: str, unit: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected (lo, hi) in {unit}, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name}: expected finite bounds in {unit}, got ({lo:g}, {hi:g})")
    return lo, hi


@dataclass(frozen=True)
class Region:
    """A box in Galactic longitude, latitude (deg) and distance (pc): the stars to fetch.

    Parameters
    ----------
    l : (float, float)
        Longitude bounds, deg. ``hi <= lo`` means the range crosses l = 0 (e.g. ``(350, 10)``); it is stored
        unwrapped, ``lo`` in [0, 360) and ``lo < hi <= lo + 360``.
    b : (float, float)
        Latitude bounds, deg, ``-90 <= lo < hi <= 90``.
    d : (float, float)
        Distance bounds, pc, ``0 <= lo < hi``.
    """

    l: tuple[float, float]
    b: tuple[float, float]
    d: tuple[float, float]

    def __post_init__(self) -> None:
        l_lo, l_hi = _pair(self.l, "l", "deg")
        b_lo, b_hi = _pair(self.b, "b", "deg")
        d_lo, d_hi = _pair(self.d, "d", "pc")
        if l_hi - l_lo > 360.0:
            raise ValueError(f"l: expected a range of at most 360 deg, got ({l_lo:g}, {l_hi:g})")
        if l_hi <= l_lo:
            l_hi += 360.0
        shift = 360.0 * math.floor(l_lo / 360.0)
        l_lo, l_hi = l_lo - shift, l_hi - shift
        if not -90.0 <= b_lo < b_hi <= 90.0:
            raise ValueError(f"b: expected -90 <= lo < hi <= 90 deg, got ({b_lo:g}, {b_hi:g})")
        if not 0.0 <= d_lo < d_hi:
            raise ValueError(f"d: expected 0 <= lo < hi pc, got ({d_lo:g}, {d_hi:g})")
        object.__setattr__(self, "l", (l_lo, l_hi))
        object.__setattr__(self, "b", (b_lo, b_hi))
        object.__setattr__(self, "d", (d_lo, d_hi))

    @classmethod
    def from_grid(cls, grid: Grid, *, padding_deg: float = 0.5, padding_fraction: float = 0.05) -> Region:
        """The region of a grid's stars, padded.

        Stars are fetched from the grid's near edge ``d_min`` (no star belongs in the foreground ghost cells)
        to its far edge, over its (l, b) box, all widened by :meth:`padded`. Stars in the padding fall off
        the grid and do not enter the fit, but they are neighbours of the stars at its edges when the
        extinction gradient is estimated for the distance-uncertainty inflation
        (:func:`~dustgp.catalog.estimate_extinction_gradient`), which is one-sided there without them.

        Parameters
        ----------
        grid : Grid
        padding_deg : float, optional
            Widening on each side in l and in b, deg.
        padding_fraction : float, optional
            Widening in distance, as a share of each bound: ``(d_min (1 - f), d_max (1 + f))``. GSP-Phot
            distances are uncertain by tens of per cent, so a share suits every region's distance.
        """
        region = cls(
            l=(float(grid.l_edges[0]), float(grid.l_edges[-1])),
            b=(float(grid.b_edges[0]), float(grid.b_edges[-1])),
            d=(grid.d_min, grid.d_max),
        )
        return region.padded(padding_deg, padding_fraction)

    def padded(self, padding_deg: float = 0.0, padding_fraction: float = 0.0) -> Region:
        """This region widened by ``padding_deg`` (deg) in l and b and by ``padding_fraction`` in distance.

        Latitudes are clipped to [-90, 90] deg and a longitude range to 360 deg.
        """
        if not (math.isfinite(padding_deg) and padding_deg >= 0):
            raise ValueError(f"padding_deg: expected a finite value >= 0 deg, got {padding_deg}")
        if not (math.isfinite(padding_fraction) and 0 <= padding_fraction < 1):
            raise ValueError(f"padding_fraction: expected a share in [0, 1), got {padding_fraction}")
        l_lo, l_hi = self.l[0] - padding_deg, self.l[1] + padding_deg
        if l_hi - l_lo >= 360.0:
            l_lo, l_hi = 0.0, 360.0
        return Region(
            l=(l_lo, l_hi),
            b=(max(self.b[0] - padding_deg, -90.0), min(self.b[1] + padding_deg, 90.0)),
            d=(self.d[0] * (1.0 - padding_fraction), self.d[1] * (1.0 + padding_fraction)),
        )

    def to_dict(self) -> dict[str, list[float]]:
        """``{"l": [lo, hi], "b": [lo, hi], "d": [lo, hi]}`` (deg, deg, pc), as recorded in files."""
        return {"l": list(self.l), "b": list(self.b), "d": list(self.d)}


@dataclass(frozen=True)
class GaiaCuts:
    """Quality cuts on ``gaiadr3.gaia_source``, added to every query. ``None`` turns a cut off.

    In a run file they are the table ``[catalog.cuts]``; TOML has no null, so there ``inf`` (or ``-inf`` for a
    lower bound) turns a cut off: an infinite bound writes no condition.

    Parameters
    ----------
    min_parallax_over_error : float or None, optional
        ``parallax_over_error >= value`` (default 5): drops stars whose GSP-Phot distance rests mostly on its
        prior. The paper's stars had fractional parallax uncertainties of 0.13-0.19 (Sect. 4), i.e. 5-8.
    max_ruwe : float or None, optional
        ``ruwe < value`` (default 1.4, the usual limit of a good single-star astrometric solution; Lindegren
        et al. 2021, A&A 649, A2).
    max_g_mag : float or None, optional
        ``phot_g_mean_mag < value``, mag (default none).
    libnames : tuple of str, optional
        Keep only stars whose best GSP-Phot library (``libname_gspphot``) is one of these, e.g. ``("MARCS",
        "PHOENIX")`` (default: all).
    where : tuple of str, optional
        Further ADQL conditions on ``gaia_source`` columns, joined with AND, written into the query as given.
    """

    min_parallax_over_error: float | None = 5.0
    max_ruwe: float | None = 1.4
    max_g_mag: float | None = None
    libnames: tuple[str, ...] = ()
    where: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("min_parallax_over_error", "max_ruwe", "max_g_mag"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value)
            ):
                raise ValueError(f"cuts: {name}: expected a number or None, got {value!r}")
        for name in ("libnames", "where"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"cuts: {name}: expected a list of strings, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        bad = [name for name in self.libnames if not _LIBNAME.match(name)]
        if bad:
            raise ValueError(f"cuts: libnames: expected library names such as 'MARCS', got {bad!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> GaiaCuts:
        """Cuts from a mapping of field names (a run file's ``[catalog.cuts]``); unknown names are an error."""
        values = dict(values or {})
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"cuts: unknown {', '.join(map(repr, unknown))}; known: {', '.join(cut_keys())}")
        return cls(**values)

    def conditions(self) -> list[str]:
        """The ADQL conditions of these cuts, in a fixed order."""
        out = []
        for column, op, value in (
            ("parallax_over_error", ">=", self.min_parallax_over_error),
            ("ruwe", "<", self.max_ruwe),
            ("phot_g_mean_mag", "<", self.max_g_mag),
        ):
            if value is not None and math.isfinite(value):
                out.append(f"{column} {op} {_num(value)}")
        if self.libnames:
            out.append("libname_gspphot IN (" + ", ".join(f"'{name}'" for name in self.libnames) + ")")
        out += [f"({clause})" for clause in self.where]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def cut_keys() -> dict[str, Any]:
    """The fields of :class:`GaiaCuts` and their annotated types (the keys of a run file's ``[catalog.cuts]``)."""
    hints = get_type_hints(GaiaCuts)
    return {f.name: hints[f.name] for f in fields(GaiaCuts)}


@dataclass(frozen=True)
class SkyChunk:
    """One piece of a region's (l, b) box, fetched with one query.

    ``l`` is unwrapped like :attr:`Region.l` (``hi`` may exceed 360); :meth:`l_condition` writes the
    condition on the archive's l in [0, 360).
    """

    l: tuple[float, float]
    b: tuple[float, float]

    def l_condition(self) -> str:
        lo, hi = self.l
        if lo >= 360.0:
            lo, hi = lo - 360.0, hi - 360.0
        if hi <= 360.0:
            return f"l >= {_num(lo)} AND l < {_num(hi)}"
        return f"(l >= {_num(lo)} OR l < {_num(hi - 360.0)})"

    def enclosing_circle(self) -> tuple[float, float, float]:
        """``(ra, dec, radius)``, deg: an ICRS circle that contains the whole chunk.

        The centre is the chunk's (l, b) centre; the radius is the largest separation from it of points
        spaced at most 0.25 deg along the chunk's edges, plus a margin that covers the bulge of a latitude edge
        (a small circle) between two sampled points and the rounding of the query's numbers.
        """
        (l_lo, l_hi), (b_lo, b_hi) = self.l, self.b
        n = max(2, math.ceil(max(l_hi - l_lo, b_hi - b_lo) / 0.25) + 1)
        ls, bs = np.linspace(l_lo, l_hi, n), np.linspace(b_lo, b_hi, n)
        edge_l = np.concatenate([ls, ls, np.full(n, l_lo), np.full(n, l_hi)])
        edge_b = np.concatenate([np.full(n, b_lo), np.full(n, b_hi), bs, bs])
        centre = SkyCoord(l=0.5 * (l_lo + l_hi) * u.deg, b=0.5 * (b_lo + b_hi) * u.deg, frame="galactic")
        edges = SkyCoord(l=edge_l * u.deg, b=edge_b * u.deg, frame="galactic")
        radius = float(centre.separation(edges).deg.max())
        # The farthest point of a small box from its centre is a corner; the edges are sampled every <= 0.25 deg
        # all the same, and 0.01 deg covers what lies between samples (< 0.25²/8 deg) and the rounding to 1e-6.
        radius = min(radius + 0.01, 180.0)
        icrs = centre.icrs
        return float(icrs.ra.deg), float(icrs.dec.deg), radius


def sky_chunks(region: Region, *, chunk_deg: float = 5.0) -> list[SkyChunk]:
    """Split a region's (l, b) box into chunks no wider than ``chunk_deg`` (deg) on either axis.

    The chunks tile the box with equal widths per axis, l varying fastest; a chunk that would straddle
    l = 360 is cut there, so every chunk's l range is one interval of the archive's [0, 360).

    Parameters
    ----------
    region : Region
    chunk_deg : float, optional
        Largest side of a chunk, deg, in (0, 30]. Smaller chunks mean smaller queries (each must finish
        within the archive's job limits) and a finer resume after an interruption.

    Returns
    -------
    list of SkyChunk
    """
    if not (math.isfinite(chunk_deg) and 0 < chunk_deg <= MAX_CHUNK_DEG):
        raise ValueError(f"chunk_deg: expected a size in (0, {MAX_CHUNK_DEG:g}] deg, got {chunk_deg}")
    (l_lo, l_hi), (b_lo, b_hi) = region.l, region.b
    l_edges = np.linspace(l_lo, l_hi, math.ceil((l_hi - l_lo) / chunk_deg - 1e-9) + 1)
    if l_lo < 360.0 < l_hi and not np.any(np.isclose(l_edges, 360.0, rtol=0, atol=1e-9)):
        l_edges = np.sort(np.append(l_edges, 360.0))
    b_edges = np.linspace(b_lo, b_hi, math.ceil((b_hi - b_lo) / chunk_deg - 1e-9) + 1)
    return [
        SkyChunk(l=(float(l_edges[i]), float(l_edges[i + 1])), b=(float(b_edges[j]), float(b_edges[j + 1])))
        for j in range(b_edges.size - 1)
        for i in range(l_edges.size - 1)
    ]


def adql_query(
    region: Region,
    *,
    cuts: GaiaCuts | None = None,
    chunk: SkyChunk | None = None,
    distance_from: DistanceFrom = "gspphot",
) -> str:
    """The ADQL query for the stars of ``region`` (or of one ``chunk`` of it) that pass ``cuts``.

    Parameters
    ----------
    region : Region
        Its distance bounds select stars by GSP-Phot distance (``distance_from="gspphot"``) or by inverse
        parallax (``"parallax"``: ``1000 / d_hi < parallax <= 1000 / d_lo`` mas).
    cuts : GaiaCuts, optional
        Default :class:`GaiaCuts()`.
    chunk : SkyChunk, optional
        The piece of the sky to query; default the whole (l, b) box of ``region`` in one query.
    distance_from : {"gspphot", "parallax"}, optional

    Returns
    -------
    str
        The query: the columns :data:`COLUMNS` of :data:`GAIA_TABLE`, an indexed cone around the chunk, the
        exact (l, b) box, the distance range, non-null GSP-Phot A0 and distance percentiles, and the cuts.
    """
    cuts = GaiaCuts() if cuts is None else cuts
    if distance_from not in CATALOG_COLUMNS:
        raise ValueError(f"distance_from: expected one of {sorted(CATALOG_COLUMNS)}, got {distance_from!r}")
    chunk = SkyChunk(l=region.l, b=region.b) if chunk is None else chunk
    ra, dec, radius = chunk.enclosing_circle()
    d_lo, d_hi = region.d
    if distance_from == "gspphot":
        distance = f"distance_gspphot >= {_num(d_lo)} AND distance_gspphot < {_num(d_hi)}"
    else:
        distance = f"parallax > {_num(1000.0 / d_hi)}" + (f" AND parallax <= {_num(1000.0 / d_lo)}" if d_lo > 0 else "")
    conditions = [
        f"1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra:.6f}, {dec:.6f}, {radius:.6f}))",
        chunk.l_condition(),
        f"b >= {_num(chunk.b[0])} AND b < {_num(chunk.b[1])}",
        distance,
        "distance_gspphot_lower IS NOT NULL AND distance_gspphot_upper IS NOT NULL",
        "azero_gspphot IS NOT NULL AND azero_gspphot_lower IS NOT NULL AND azero_gspphot_upper IS NOT NULL",
        *cuts.conditions(),
    ]
    return f"SELECT {', '.join(COLUMNS)}\nFROM {GAIA_TABLE}\nWHERE " + "\n  AND ".join(conditions)
