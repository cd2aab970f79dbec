"""Atomic file writes: the one helper every writer (maps, checkpoints, tables, figures) goes through.

A crash or a full disk never leaves a half-written file under the final name: data go to a hidden temporary next to
the target, are flushed to disk, and then take the final name in one step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path"]

log = logging.getLogger("dustgp.io")  # the logger name atomic writes have always used

PathType = str | os.PathLike[str]


@contextlib.contextmanager
def atomic_path(path: PathType, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it to ``path`` in one step.

    The temporary name keeps the target's suffixes (writers such as astropy choose compression from them) and
    is hidden (leading dot). Without ``overwrite`` the final step is a hard link, which fails atomically if
    the target appeared meanwhile.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{target.parent}: no such directory")
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp{''.join(target.suffixes)}")
    try:
        yield tmp
        _fsync(tmp)  # the data reach the disk before the name does: a crash never leaves a named empty file
        if overwrite:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise FileExistsError(f"{target} exists; pass overwrite=True to replace it") from None
            except OSError:  # a filesystem without hard links: check-then-rename (a tiny race window)
                if target.exists():
                    raise FileExistsError(f"{target} exists; pass overwrite=True to replace it") from None
                os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync(target.parent, directory=True)  # the rename itself
    log.info("wrote %s", target)


def _fsync(path: Path, *, directory: bool = False) -> None:
    """Flush a file (or a directory's entries) to disk; a directory that cannot be opened is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if not directory:
            raise
        return  # e.g. Windows, where directories cannot be opened
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)
