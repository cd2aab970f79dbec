"""What makes a catalogue row unusable, and how it is reported.

:class:`CatalogError` is the one error of the catalogue edge. A bad value is recorded as a :class:`Problem` (the
column, what was expected, what arrived, and in which input rows); the problems of a table are then raised together
in one message that names every column, expectation and row (the first :data:`MAX_ROWS_SHOWN` of each), or counted
in the warning of rows dropped.

Implausible values are bad rows like NaN ones: ``|A| >`` :data:`MAX_ABS_EXTINCTION`, ``sigma_A <``
:data:`MIN_EXTINCTION_ERR`, distance ``>`` :data:`MAX_DISTANCE` and ``|parallax| >`` :data:`MAX_ABS_PARALLAX` are
unit or sentinel errors (millimag read as mag, -9999), not measurements, and one of them is enough to spoil a map.
The ``check_*`` functions read these limits when they are called, so the core constructor and the friendly ones
apply the same limits.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "MAX_ABS_EXTINCTION",
    "MAX_ABS_PARALLAX",
    "MAX_DISTANCE",
    "MAX_ROWS_SHOWN",
    "MIN_EXTINCTION_ERR",
    "CatalogError",
    "Problem",
    "check",
    "check_distance_plausible",
    "check_extinction_err_plausible",
    "check_extinction_plausible",
    "format_rows",
    "quoted",
    "raise_problems",
]

#: Rows listed in an error message before "... and N more".
MAX_ROWS_SHOWN = 10
#: Largest plausible |extinction|, mag: larger values are unit or sentinel errors (e.g. -9999, A in mmag).
MAX_ABS_EXTINCTION = 30.0
#: Smallest plausible extinction uncertainty, mag: below it the weights 1/sigma² (up to 1e12 mag⁻²) leave the
#: precision a float32 fit can use, and no photometric extinction is known that well.
MIN_EXTINCTION_ERR = 1e-6
#: Largest plausible distance, pc (100 kpc: beyond the Milky Way's stellar halo).
MAX_DISTANCE = 1e5
#: Largest plausible |parallax| given with an error, mas (1 pc; Proxima Centauri's is 768 mas): where any sign is a
#: measurement, larger values are unit or sentinel errors (-9999).
MAX_ABS_PARALLAX = 1000.0


class CatalogError(ValueError):
    """A catalogue that cannot be used as given: a missing column, a wrong unit or bad rows."""


class Problem(NamedTuple):
    """One kind of bad value: where (column), what was expected, what arrived, and in which input rows."""

    column: str
    expected: str
    found: str
    rows: np.ndarray


def format_rows(rows: np.ndarray) -> str:
    """``"3, 4, 5"``, or the first :data:`MAX_ROWS_SHOWN` rows followed by ``", ... and N more"``."""
    shown = ", ".join(str(int(r)) for r in rows[:MAX_ROWS_SHOWN])
    if rows.size > MAX_ROWS_SHOWN:
        shown += f", ... and {rows.size - MAX_ROWS_SHOWN} more"
    return shown


def _describe(problem: Problem) -> str:
    n = problem.rows.size
    return (
        f"column {problem.column}: expected {problem.expected}, got {problem.found} in {n} "
        f"row{'s' if n != 1 else ''}: {format_rows(problem.rows)}"
    )


def check(problems: list[Problem], column: str, expected: str, found: str, bad: np.ndarray) -> None:
    """Record the rows where ``bad`` is True (if any) as one problem."""
    rows = np.flatnonzero(bad)
    if rows.size:
        problems.append(Problem(column, expected, found, rows))


def raise_problems(problems: list[Problem], n_rows: int, *, hint: str = "") -> None:
    """Raise one :class:`CatalogError` listing every problem, one line each."""
    n_bad = np.unique(np.concatenate([p.rows for p in problems])).size
    lines = [f"{n_bad} of {n_rows} rows are not usable{hint}:"]
    lines += ["  " + _describe(p) for p in problems]
    raise CatalogError("\n".join(lines))


def quoted(name: str) -> str:
    """A column or argument name as messages quote it: ``'dist50'``."""
    return repr(str(name))


# What implausible values are reported as (expected, found), in messages and in the drop warning.
_MAX_DISTANCE_TEXT = f"distance <= {MAX_DISTANCE / 1e3:g} kpc (farther is implausible: a unit or sentinel value?)"
_FAR_TEXT = f"distance > {MAX_DISTANCE / 1e3:g} kpc"
_MAX_EXTINCTION_TEXT = f"|extinction| <= {MAX_ABS_EXTINCTION:g} mag (larger is implausible: a unit or sentinel value?)"
_LARGE_A_TEXT = f"|extinction| > {MAX_ABS_EXTINCTION:g} mag"
_MIN_ERR_TEXT = f"extinction uncertainty >= {MIN_EXTINCTION_ERR:g} mag (smaller is implausible)"
_TINY_TEXT = f"uncertainty < {MIN_EXTINCTION_ERR:g} mag"


def check_distance_plausible(problems: list[Problem], column: str, distance: np.ndarray) -> None:
    """Record finite distances beyond :data:`MAX_DISTANCE` (pc); non-finite ones are reported elsewhere, once."""
    check(problems, column, _MAX_DISTANCE_TEXT, _FAR_TEXT, np.isfinite(distance) & (distance > MAX_DISTANCE))


def check_extinction_plausible(problems: list[Problem], column: str, extinction: np.ndarray) -> None:
    """Record finite extinctions with ``|A| >`` :data:`MAX_ABS_EXTINCTION` (mag)."""
    too_large = np.isfinite(extinction) & (np.abs(extinction) > MAX_ABS_EXTINCTION)
    check(problems, column, _MAX_EXTINCTION_TEXT, _LARGE_A_TEXT, too_large)


def check_extinction_err_plausible(
    problems: list[Problem], column: str, sigma: np.ndarray, *, floor: float | None = None
) -> None:
    """Record positive extinction uncertainties below :data:`MIN_EXTINCTION_ERR` (mag).

    ``floor`` (mag), when given, is the ``extinction_err_floor`` already applied, and the message says so.
    """
    expected = _MIN_ERR_TEXT if floor is None else f"{_MIN_ERR_TEXT[:-1]}; after extinction_err_floor = {floor:g} mag)"
    check(problems, column, expected, _TINY_TEXT, (sigma > 0) & (sigma < MIN_EXTINCTION_ERR))
