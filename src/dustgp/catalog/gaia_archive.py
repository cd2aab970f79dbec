"""Fetching from the Gaia archive: the TAP service, retries with backoff, and the chunks of a region through the cache.

The TAP service is any object with astroquery's ``launch_job_async(query)`` returning a job whose
``get_results()`` gives an astropy Table (:class:`TapService`); tests pass a fake. The default,
:func:`default_service`, is astroquery's ``TapPlus`` on the ESA archive: astroquery is an optional extra
(``pip install 'dustgp[gaia]'``) and is imported there, when a fetch needs it, and nowhere else — importing
``astroquery.gaia`` itself contacts the archive, so this module uses its TAP layer directly.

:func:`fetch_gaia_table` fetches the chunks of a region (:mod:`dustgp.catalog.gaia_query`) that are not in the
cache (:mod:`dustgp.catalog.gaia_cache`), with retries and exponential backoff, and raises a :class:`GaiaError`
naming the chunk, the archive and the cache when the archive cannot be reached.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from astropy.table import Table, vstack
from tqdm.auto import tqdm

from .._version import __version__
from ..grid import Grid
from .gaia_cache import ChunkCache
from .gaia_query import COLUMN_UNITS, COLUMNS, GAIA_TABLE, DistanceFrom, GaiaCuts, Region, adql_query, sky_chunks

__all__ = [
    "GAIA_TAP_URL",
    "GaiaError",
    "TapJob",
    "TapService",
    "default_service",
    "fetch_gaia_table",
    "provenance",
]

logger = logging.getLogger(__name__)

#: The ESA Gaia archive's TAP endpoint.
GAIA_TAP_URL = "https://gea.esac.esa.int/tap-server/tap"


class GaiaError(OSError):
    """The Gaia archive cannot be reached or answers with something unusable, or the local cache is unusable.

    An :class:`OSError`, like a file that cannot be read: the command line reports it as one line, status 2.
    """


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
    table.meta.update(provenance(region, cuts, distance_from, len(chunks)))
    logger.info("Gaia DR3: %d stars", len(table))
    return table


def provenance(region: Region, cuts: GaiaCuts, distance_from: str, n_chunks: int) -> dict[str, Any]:
    """Table metadata (short upper-case keys, JSON strings: FITS headers keep them as they are)."""
    return {
        "SOURCE": GAIA_TABLE,
        "REGION": json.dumps(region.to_dict()),
        "CUTS": json.dumps(cuts.to_dict()),
        "DISTFROM": distance_from,
        "NCHUNKS": n_chunks,
        "DUSTGP": __version__,
    }
