"""The local cache of fetched Gaia chunks: one FITS file per query, checked by its SHA-256 before it is used.

:class:`ChunkCache` names each chunk's files by the SHA-256 of its query text (:mod:`dustgp.catalog.gaia_query`)
and keeps, next to the data, a JSON sidecar holding the query and the data file's SHA-256. A chunk whose file and
sidecar agree is never fetched again; a damaged or half-written one is fetched again. Both files are written
atomically, so an interrupted fetch resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from astropy.table import Table

from .._atomic import atomic_path
from .._version import __version__

__all__ = ["ChunkCache"]

logger = logging.getLogger(__name__)


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
