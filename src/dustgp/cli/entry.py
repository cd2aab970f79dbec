"""The ``dustgp`` entry point: parse, run the command, and turn what went wrong into an exit status.

Run ``dustgp SUBCOMMAND --help`` for every option. Progress goes to stderr (``--quiet`` silences it); Ctrl-C
during a fit writes the checkpoint and exits with status 130, and ``--resume`` continues from it.

Exit status: 0 done; 2 a problem with what was given (a run file, a catalogue, a grid, a missing, damaged or
existing file, a fit that cannot start or go on), reported as one line on stderr; 1 a computation that failed
otherwise, also one line; 130 interrupted (Ctrl-C), 143 terminated (SIGTERM: during a fit the checkpoint is
written and no maps; while predicting or writing, the file under way is not written and earlier files are kept).
``-v`` adds the traceback.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

from .parser import build_parser, glue_negative_values

__all__ = ["USER_ERRORS", "main"]

logger = logging.getLogger("dustgp")

#: Errors that come from what the user gave, not from the computation: exit status 2. ValueError covers
#: CatalogError, GridError, ConfigError and MapFileError; OSError covers missing, existing, unreadable and
#: unwritable files. dustgp.fitting.FitError (CheckpointError, fits that cannot start: no star on the grid) is
#: added by :func:`_user_errors` once the fitting code is loaded: it imports torch, which the commands that only
#: read a map (view, query, info, plot) never need, and whose import dominates their start-up.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError)


def _user_errors() -> tuple[type[BaseException], ...]:
    """:data:`USER_ERRORS`, and FitError when a command loaded the fitting code (only then can it be raised)."""
    fitting = sys.modules.get("dustgp.fitting")
    return USER_ERRORS if fitting is None else (*USER_ERRORS, fitting.FitError)


def _one_line(exc: BaseException) -> str:
    """An exception as one line: multi-line messages (a catalogue's bad-row report) joined with '; '."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        lines = [f"missing entry {exc.args[0]!r}"]
    if not lines:
        return type(exc).__name__
    head, rest = lines[0], lines[1:]
    return head + (" " if head.endswith(":") else "; ") + "; ".join(rest) if rest else head


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """Library warnings (astropy's, ...) as one log line each, not file, line and source text."""
    logging.getLogger("py.warnings").warning("%s: %s", category.__name__, _one_line(Warning(str(message))))


class _Terminated(KeyboardInterrupt):
    """SIGTERM outside a fit's steps (while predicting or writing a map): unwinds like Ctrl-C, so a write under
    way removes its temporary and leaves any earlier file as it was; the command exits with 143."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`_Terminated` (a fit's loop sets its own handler while it runs and
    puts this one back). Only the main thread may set handlers; elsewhere (a test runner's worker) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(glue_negative_values(sys.argv[1:] if argv is None else list(argv)))
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    with warnings.catch_warnings(), _sigterm_unwinds():
        if not args.verbose:
            warnings.showwarning = _show_warning
        try:
            return args.func(args)
        except _Terminated:
            logger.error("terminated")
            return 143
        except KeyboardInterrupt:
            logger.error("interrupted")
            return 130
        except _user_errors() as exc:
            logger.error("%s", _one_line(exc), exc_info=exc if args.verbose else None)
            return 2
        except Exception as exc:
            hint = "" if args.verbose else " (run with -v for the traceback)"
            logger.error(
                "failed: %s: %s%s", type(exc).__name__, _one_line(exc), hint, exc_info=exc if args.verbose else None
            )
            return 1
