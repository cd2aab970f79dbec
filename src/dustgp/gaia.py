"""Gaia DR3 stars for a region of the sky: GSP-Phot extinctions and distances from the ESA archive.

Gaia DR3's GSP-Phot (Andrae et al. 2023, A&A 674, A27) gives, for some 470 million stars, the monochromatic
extinction ``azero_gspphot`` (A0 at 541.4 nm, mag) and the distance ``distance_gspphot`` (pc), each with its
16th and 84th percentiles (``*_lower``, ``*_upper``), in the table ``gaiadr3.gaia_source``. This module turns a
region — a :class:`~dustgp.grid.Grid` or (l, b, d) bounds — into ADQL queries of that table, fetches them from
the archive's TAP service in sky chunks, keeps every chunk in a local cache, and returns the stars as a table
or as a :class:`~dustgp.catalog.Catalog` whose distance percentiles feed the distance-uncertainty handling
(:meth:`~dustgp.catalog.Catalog.inflate_for_distance`).

The pieces, from the strict core outwards:

- :class:`Region` (bounds, padding), :class:`GaiaCuts` (quality cuts a user can change), :func:`sky_chunks`
  and :func:`adql_query` build the query text; they need no network.
- :class:`ChunkCache`: one FITS file per chunk, named by the SHA-256 of its query, with a JSON sidecar holding
  the query and the file's SHA-256. A chunk whose file and sidecar agree is never fetched again; a damaged or
  half-written one is fetched again. Files are written atomically, so an interrupted fetch resumes where it
  stopped.
- :func:`fetch_gaia_table` fetches the chunks that are not cached, with retries and exponential backoff, and
  a :class:`GaiaError` naming the chunk, the archive and the cache when the archive cannot be reached.
- :func:`fetch_gaia` returns a :class:`~dustgp.catalog.Catalog`; :func:`catalog_for_grid` is what a run file
  with ``[catalog] source = "gaia-dr3"`` executes.

The TAP service is any object with astroquery's ``launch_job_async(query)`` returning a job whose
``get_results()`` gives an astropy Table; tests pass a fake. The default, :func:`default_service`, is
astroquery's ``TapPlus`` on the ESA archive: astroquery is an optional extra (``pip install 'dustgp[gaia]'``)
and is imported there, when a fetch needs it, and nowhere else — importing ``astroquery.gaia`` itself contacts
the archive, so this module uses its TAP layer directly.

Why the queries look as they do: ``gaia_source`` is indexed on (ra, dec), not on (l, b). Each chunk's query
therefore first selects an ICRS circle that encloses the chunk (an indexed cone search), then cuts the exact
Galactic box, so the archive never scans the whole table. Chunks are half-open in l and b (``lo <= x < hi``),
so a star on a shared edge comes back once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, get_type_hints

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table, vstack
from tqdm.auto import tqdm

from ._atomic import atomic_path
from ._version import __version__
from .catalog import Catalog, OnBad
from .grid import Grid

__all__ = [
    "CATALOG_COLUMNS",
    "COLUMNS",
    "GAIA_TABLE",
    "GAIA_TAP_URL",
    "ChunkCache",
    "GaiaCuts",
    "GaiaError",
    "Region",
    "SkyChunk",
    "adql_query",
    "catalog_for_grid",
    "cut_keys",
    "default_service",
    "fetch_gaia",
    "fetch_gaia_table",
    "gaia_catalog",
    "read_gaia_table",
    "sky_chunks",
    "write_gaia_table",
]

logger = logging.getLogger(__name__)

#: The ESA Gaia archive's TAP endpoint.
GAIA_TAP_URL = "https://gea.esac.esa.int/tap-server/tap"
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
#: Column mapping of :meth:`Catalog.from_table` / :meth:`Catalog.read` for a table of this module, by the
#: distance used: GSP-Phot's (with its 16th/84th percentiles) or the inverse parallax.
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


class GaiaError(OSError):
    """The Gaia archive cannot be reached or answers with something unusable, or the local cache is unusable.

    An :class:`OSError`, like a file that cannot be read: the command line reports it as one line, status 2.
    """


def _num(x: float) -> str:
    return f"{float(x):.{_DIGITS}g}"


# ----------------------------------------------------------------------------------------------------
# Region, cuts, chunks and the query text


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


# ----------------------------------------------------------------------------------------------------
# The TAP service and the chunk cache


class TapJob(Protocol):
    """What a TAP job must offer: its result as a table."""

    def get_results(self) -> Table: ...


class TapService(Protocol):
    """What a TAP service must offer: astroquery's ``launch_job_async`` (``TapPlus``, ``GaiaClass``)."""

    def launch_job_async(self, query: str) -> TapJob: ...


def default_service(url: str = GAIA_TAP_URL) -> TapService:
    """astroquery's TAP client on the ESA Gaia archive (no network until a job is launched).

    Raises
    ------
    GaiaError
        astroquery is not installed.
    """
    try:
        # The one import of the optional extra, where a fetch needs it (see the module's notes).
        from astroquery.utils.tap.core import TapPlus
    except ImportError as exc:
        raise GaiaError(
            f"fetching from the Gaia archive needs astroquery ({exc}); install it with pip install 'dustgp[gaia]'"
        ) from None
    return TapPlus(url=url)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ChunkCache:
    """A folder of fetched chunks: ``<key>.fits`` and ``<key>.json`` per query, ``key`` = SHA-256 of the query.

    The sidecar JSON records the query, the data file's SHA-256, its number of rows and when it was fetched.
    It is written after the data file, both atomically: a chunk counts as cached only when the two agree.

    Parameters
    ----------
    folder : path
        Created when the first chunk is stored.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @staticmethod
    def key(query: str) -> str:
        return hashlib.sha256(query.encode()).hexdigest()[:24]

    def paths(self, query: str) -> tuple[Path, Path]:
        key = self.key(query)
        return self.folder / f"{key}.fits", self.folder / f"{key}.json"

    def load(self, query: str) -> Table | None:
        """The cached result of ``query``, or None if absent or damaged (a damaged chunk is logged)."""
        data, sidecar = self.paths(query)
        if not sidecar.is_file():
            if data.exists():
                logger.warning("%s has no sidecar %s (an interrupted fetch?): fetching it again", data, sidecar.name)
            return None
        try:
            record = json.loads(sidecar.read_text())
            expected, rows, recorded_query = record["sha256"], int(record["rows"]), record["query"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("%s is not a readable chunk record (%s): fetching the chunk again", sidecar, exc)
            return None
        if recorded_query != query:
            logger.warning("%s records another query: fetching the chunk again", sidecar)
            return None
        if not data.is_file():
            logger.warning("%s is missing: fetching the chunk again", data)
            return None
        found = _sha256(data)
        if found != expected:
            logger.warning(
                "%s: SHA-256 %s… does not match the %s… recorded in %s (a damaged file): fetching the chunk again",
                data,
                found[:12],
                expected[:12],
                sidecar.name,
            )
            return None
        table = Table.read(data, format="fits")
        if len(table) != rows:
            logger.warning("%s: %d rows, %d recorded: fetching the chunk again", data, len(table), rows)
            return None
        return table

    def store(self, query: str, table: Table) -> Path:
        """Write ``table`` as the result of ``query`` (data file first, then the sidecar); return the data path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        data, sidecar = self.paths(query)
        with atomic_path(data, overwrite=True) as tmp:
            table.write(tmp, format="fits")
        record = {
            "query": query,
            "file": data.name,
            "sha256": _sha256(data),
            "rows": len(table),
            "fetched_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "dustgp_version": __version__,
        }
        with atomic_path(sidecar, overwrite=True) as tmp:
            tmp.write_text(json.dumps(record, indent=1))
        return data


# ----------------------------------------------------------------------------------------------------
# Fetching


def _standardise(table: Table, query: str) -> Table:
    """The selected columns in :data:`COLUMNS` order, lower-case names, with their units."""
    table = Table(table, copy=False)
    lower = {name: name.lower() for name in table.colnames if name != name.lower()}
    if lower:
        table.rename_columns(list(lower), list(lower.values()))
    missing = [c for c in COLUMNS if c not in table.colnames]
    if missing:
        raise GaiaError(
            f"the archive's answer lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(got {', '.join(table.colnames) or 'none'}) for the query:\n{query}"
        )
    table = table[list(COLUMNS)]
    for name, unit in COLUMN_UNITS.items():
        if table[name].unit is None:
            table[name].unit = unit
    table.meta.clear()
    return table


def _fetch_one(
    service: TapService,
    query: str,
    *,
    where: str,
    retries: int,
    backoff: float,
    sleep: Callable[[float], None],
    resume_hint: str,
    archive: str = "",
) -> Table:
    """Run one query, retrying failures after ``backoff * 2**k`` s; a :class:`GaiaError` when all fail."""
    attempts = retries + 1
    for attempt in range(attempts):
        try:
            return service.launch_job_async(query).get_results()
        except GaiaError:
            raise
        except Exception as exc:  # a TAP client fails in many ways (socket, HTTP, XML): all are worth a retry
            if attempt + 1 == attempts:
                # socket, connection and HTTP errors are OSErrors; anything else is the archive failing the query
                cause = "is the network reachable?" if isinstance(exc, OSError) else "the archive failed the query."
                raise GaiaError(
                    f"could not fetch {where} from the Gaia archive{archive} ({type(exc).__name__}: {exc}) after "
                    f"{attempts} attempt{'s' if attempts > 1 else ''}: {cause} {resume_hint}"
                ) from exc
            delay = backoff * 2.0**attempt
            logger.warning(
                "Gaia archive: %s failed (%s: %s); attempt %d of %d in %.3g s",
                where,
                type(exc).__name__,
                exc,
                attempt + 2,
                attempts,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def fetch_gaia_table(
    region: Region | Grid,
    *,
    cuts: GaiaCuts | None = None,
    cache: str | Path = "gaia-cache",
    chunk_deg: float = 5.0,
    distance_from: DistanceFrom = "gspphot",
    service: TapService | None = None,
    retries: int = 3,
    backoff: float = 2.0,
    progress: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> Table:
    """Fetch the Gaia DR3 stars of a region, chunk by chunk, through a local cache.

    Parameters
    ----------
    region : Region or Grid
        A grid becomes :meth:`Region.from_grid` with its default padding.
    cuts : GaiaCuts, optional
        Quality cuts (default :class:`GaiaCuts()`).
    cache : path, optional
        Folder of fetched chunks (:class:`ChunkCache`). Cached chunks are read, never fetched again; the
        others are fetched and stored one by one, so an interrupted fetch resumes where it stopped.
    chunk_deg : float, optional
        Largest side of a sky chunk, deg (:func:`sky_chunks`).
    distance_from : {"gspphot", "parallax"}, optional
        What the distance bounds select on (:func:`adql_query`).
    service : TapService, optional
        The TAP service; default :func:`default_service` (made only if a chunk must be fetched).
    retries : int, optional
        Further attempts per chunk after a failure, waiting ``backoff * 2**k`` s before attempt ``k + 2``.
    backoff : float, optional
        First wait, s.
    progress : bool, optional
        A progress bar over the chunks to fetch, on stderr.
    sleep : callable, optional
        How to wait (tests pass one that does not).

    Returns
    -------
    astropy.table.Table
        The columns :data:`COLUMNS` with units (deg, mas, mag, pc), one row per star, chunks in order; its
        ``meta`` records the region, the cuts, the distance selection, the number of chunks and the version.

    Raises
    ------
    GaiaError
        A chunk could not be fetched after all attempts (the message names it, the archive's error and the
        cache that holds the chunks fetched so far), or an answer lacks a selected column.
    ValueError
        Invalid region, cuts, ``chunk_deg``, ``retries`` or ``backoff``.
    """
    region = Region.from_grid(region) if isinstance(region, Grid) else region
    cuts = GaiaCuts() if cuts is None else cuts
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries: expected an integer >= 0, got {retries!r}")
    if not (math.isfinite(backoff) and backoff >= 0):
        raise ValueError(f"backoff: expected a finite wait >= 0 s, got {backoff}")
    chunks = sky_chunks(region, chunk_deg=chunk_deg)
    queries = [adql_query(region, cuts=cuts, chunk=c, distance_from=distance_from) for c in chunks]
    store = ChunkCache(cache)
    results: list[Table | None] = [store.load(q) for q in queries]
    todo = [i for i, t in enumerate(results) if t is None]
    logger.info(
        "Gaia DR3: %d sky chunk%s of at most %g deg over l %.4g..%.4g, b %.4g..%.4g deg, d %.4g..%.4g pc; "
        "%d cached in %s, %d to fetch",
        len(chunks),
        "" if len(chunks) == 1 else "s",
        chunk_deg,
        *region.l,
        *region.b,
        *region.d,
        len(chunks) - len(todo),
        store.folder,
        len(todo),
    )
    archive = ""
    if todo and service is None:
        service, archive = default_service(), f" at {GAIA_TAP_URL}"
    if todo:
        logger.debug("first query sent:\n%s", queries[todo[0]])
    for done, i in enumerate(tqdm(todo, desc="Gaia DR3 chunks", unit="chunk", disable=not progress)):
        c = chunks[i]
        where = f"sky chunk {i + 1} of {len(chunks)} (l {c.l[0]:.4g}..{c.l[1]:.4g}, b {c.b[0]:.4g}..{c.b[1]:.4g} deg)"
        cached = len(chunks) - len(todo) + done
        hint = f"{cached} of {len(chunks)} chunks are cached in {store.folder}: run again to resume."
        raw = _fetch_one(
            service,
            queries[i],
            where=where,
            retries=retries,
            backoff=backoff,
            sleep=sleep,
            resume_hint=hint,
            archive=archive,
        )
        results[i] = _standardise(raw, queries[i])
        store.store(queries[i], results[i])
    tables = [_standardise(t, q) for t, q in zip(results, queries, strict=True) if t is not None]
    table = vstack(tables, join_type="exact", metadata_conflicts="silent") if tables else Table()
    if len(table):
        _, first = np.unique(np.asarray(table["source_id"]), return_index=True)
        if first.size < len(table):
            logger.warning("dropped %d stars that came back in two chunks", len(table) - first.size)
            table = table[np.sort(first)]
    table.meta.clear()
    table.meta.update(_provenance(region, cuts, distance_from, len(chunks)))
    logger.info("Gaia DR3: %d stars", len(table))
    return table


def _provenance(region: Region, cuts: GaiaCuts, distance_from: str, n_chunks: int) -> dict[str, Any]:
    """Table metadata (short upper-case keys, JSON strings: FITS headers keep them as they are)."""
    return {
        "SOURCE": GAIA_TABLE,
        "REGION": json.dumps(region.to_dict()),
        "CUTS": json.dumps(cuts.to_dict()),
        "DISTFROM": distance_from,
        "NCHUNKS": n_chunks,
        "DUSTGP": __version__,
    }


def gaia_catalog(
    table: Table,
    *,
    distance_from: DistanceFrom = "gspphot",
    on_bad: OnBad = "drop",
    extinction_err_floor: float = 0.0,
    inflate: bool = True,
) -> Catalog:
    """A :class:`~dustgp.catalog.Catalog` from a table of this module (fetched or read back).

    Extinction is GSP-Phot's A0 with :math:`\\sigma_A = (p_{84} - p_{16}) / 2`; the distance is GSP-Phot's
    with :math:`\\sigma_d` from its percentiles the same way (or the inverse parallax, ``distance_from =
    "parallax"``), folded into :math:`\\sigma_A` by :meth:`~dustgp.catalog.Catalog.inflate_for_distance`
    when ``inflate``. Rows the catalogue cannot use (e.g. GSP-Phot percentiles with :math:`p_{84} = p_{16}`)
    are dropped by default, with a warning that counts them.
    """
    if distance_from not in CATALOG_COLUMNS:
        raise ValueError(f"distance_from: expected one of {sorted(CATALOG_COLUMNS)}, got {distance_from!r}")
    return Catalog.from_table(
        table,
        **CATALOG_COLUMNS[distance_from],
        on_bad=on_bad,
        extinction_err_floor=extinction_err_floor,
        inflate=inflate,
    )


def fetch_gaia(
    region: Region | Grid,
    *,
    on_bad: OnBad = "drop",
    extinction_err_floor: float = 0.0,
    inflate: bool = True,
    **fetch_options: Any,
) -> Catalog:
    """:func:`fetch_gaia_table` then :func:`gaia_catalog`: the Gaia DR3 stars of a region as a catalogue.

    Examples
    --------
    >>> grid = Grid(l=(180, 225, 45), b=(-35, 0, 35), d=(300, 550, 25), ghost_cells=3)  # doctest: +SKIP
    >>> stars = fetch_gaia(grid, cache="gaia-cache")  # doctest: +SKIP
    """
    table = fetch_gaia_table(region, **fetch_options)
    return gaia_catalog(
        table,
        distance_from=fetch_options.get("distance_from", "gspphot"),
        on_bad=on_bad,
        extinction_err_floor=extinction_err_floor,
        inflate=inflate,
    )


def write_gaia_table(table: Table, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a fetched table (any format astropy writes, by suffix), atomically, with its provenance."""
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        table.write(tmp, overwrite=True)
    return path


def read_gaia_table(path: str | Path) -> Table:
    """Read a table written by :func:`write_gaia_table`, checking that it has the columns of :data:`COLUMNS`."""
    table = Table.read(path)
    missing = [c for c in COLUMNS if c not in table.colnames]
    if missing:
        raise ValueError(f"{path}: not a Gaia table of dustgp: no column {', '.join(missing)}")
    return table


def catalog_for_grid(
    grid: Grid,
    *,
    path: str | None = None,
    cache: str = "gaia-cache",
    padding_deg: float = 0.5,
    padding_fraction: float = 0.05,
    chunk_deg: float = 5.0,
    distance_from: DistanceFrom = "gspphot",
    cuts: Mapping[str, Any] | None = None,
    retries: int = 3,
    on_bad: OnBad = "drop",
    extinction_err_floor: float = 0.0,
    inflate: bool = True,
    progress: bool = True,
    service: TapService | None = None,
) -> Catalog:
    """The Gaia DR3 stars of a grid: what a run file with ``[catalog] source = "gaia-dr3"`` executes.

    Parameters
    ----------
    grid : Grid
        The training grid; the stars' region is :meth:`Region.from_grid` with ``padding_deg`` and
        ``padding_fraction``.
    path : str, optional
        The fetched stars as a table file (e.g. ``"orion_stars.fits"``): read when it exists — after checking
        that it was fetched for this region, cuts and distance selection —, else fetched and written there.
    cache : str, optional
        Folder of fetched chunks (:class:`ChunkCache`).
    cuts : mapping, optional
        :class:`GaiaCuts` fields (a run file's ``[catalog.cuts]``); infinite bounds turn a cut off.
    chunk_deg, distance_from, retries, progress, service
        As in :func:`fetch_gaia_table`.
    on_bad, extinction_err_floor, inflate
        As in :func:`gaia_catalog`.

    Raises
    ------
    ValueError
        ``path`` holds stars fetched for another region, other cuts or another distance selection.
    GaiaError
        See :func:`fetch_gaia_table`.
    """
    region = Region.from_grid(grid, padding_deg=padding_deg, padding_fraction=padding_fraction)
    gaia_cuts = GaiaCuts.from_dict(cuts)
    table = None
    if path is not None and Path(path).exists():
        table = read_gaia_table(path)
        wanted = _provenance(region, gaia_cuts, distance_from, 0)
        for key, what in (("REGION", "region"), ("CUTS", "cuts"), ("DISTFROM", "distance selection")):
            found = table.meta.get(key)
            if found is None or _loads(found) != _loads(wanted[key]):
                raise ValueError(
                    f"{path} holds Gaia stars for another {what} ({key} {found!r}, this run wants {wanted[key]!r}); "
                    "delete it (the chunk cache makes a new fetch cheap) or give another path"
                )
        logger.info("read %d Gaia DR3 stars from %s", len(table), path)
    if table is None:
        table = fetch_gaia_table(
            region,
            cuts=gaia_cuts,
            cache=cache,
            chunk_deg=chunk_deg,
            distance_from=distance_from,
            service=service,
            retries=retries,
            progress=progress,
        )
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            write_gaia_table(table, path)
    return gaia_catalog(
        table, distance_from=distance_from, on_bad=on_bad, extinction_err_floor=extinction_err_floor, inflate=inflate
    )


def _loads(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) and text[:1] in "[{" else text
    except ValueError:
        return text
