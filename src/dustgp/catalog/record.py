r"""The catalogue record: positions, distances and extinctions of stars with their uncertainties, in internal units.

:class:`Catalog` holds, per star, Galactic longitude ``l`` and latitude ``b`` (deg), distance (pc) with an
optional uncertainty ``distance_err`` (pc), and observed extinction ``A`` (mag) with its uncertainty (mag), as
read-only float64 arrays. Its constructor is the strict core on bare arrays; the friendly constructors
:meth:`Catalog.read`, :meth:`Catalog.from_table` and :meth:`Catalog.from_arrays` (:mod:`dustgp.catalog.readers`)
take tables, named columns, units and percentile pairs, and raise a :class:`~dustgp.catalog.CatalogError` that
names the column, the expectation and the rows, or drop the bad rows and record them.

Distance uncertainties are folded into the extinction uncertainties (docs: Method §1; Rezaei Kh. et al. 2020,
Eqs. 1-2):

.. math::

    \sigma_i^2 = \sigma_{A,i}^2 + \left(\frac{dA}{dd}\Big|_{d_i}\right)^2 \sigma_{d,i}^2 ,

with the gradient ``dA/dd`` estimated from neighbouring stars
(:func:`~dustgp.catalog.estimate_extinction_gradient`) or given by the user (e.g. the density of a previous map).
See :meth:`Catalog.inflate_for_distance`.
"""

from __future__ import annotations

import logging
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table

from . import readers
from .checks import (
    CatalogError,
    Problem,
    check,
    check_distance_plausible,
    check_extinction_err_plausible,
    check_extinction_plausible,
    raise_problems,
)
from .gradient import GradientSpec, estimate_extinction_gradient, given_gradient

__all__ = ["Catalog"]

logger = logging.getLogger(__name__)


def _readonly(values: Any, name: str, n: int | None, dtype: type = np.float64) -> np.ndarray:
    if getattr(values, "unit", None) is not None:
        raise CatalogError(
            f"{name}: Catalog() takes bare arrays in internal units (deg, pc, mag); "
            "use Catalog.from_arrays for values with units"
        )
    arr = np.array(values, dtype=dtype, copy=True)
    if arr.ndim != 1:
        raise CatalogError(f"{name}: expected a 1-D array, got ndim={arr.ndim}")
    if n is not None and arr.size != n:
        raise CatalogError(f"{name}: expected {n} values (one per star), got {arr.size}")
    arr.flags.writeable = False
    return arr


class Catalog:
    r"""A star catalogue in internal units, read-only.

    This constructor is the strict core: it takes bare arrays already in deg / pc / mag, checks them and
    raises a :class:`CatalogError` on any bad value. Most users want :meth:`read`, :meth:`from_table` or
    :meth:`from_arrays`, which handle column names, units, percentile pairs, bad rows and the distance
    inflation.

    Parameters
    ----------
    l, b : array_like, shape (n,)
        Galactic longitude and latitude, deg; ``|b| <= 90``. ``l`` is wrapped into [0, 360).
    distance : array_like, shape (n,)
        Distance, pc, > 0.
    extinction : array_like, shape (n,)
        Observed extinction, mag (may be negative: a noisy measurement).
    extinction_err : array_like, shape (n,)
        Observed extinction uncertainty, mag, > 0, *before* any distance inflation; available afterwards as
        :attr:`extinction_err_observed`.
    distance_err : array_like, shape (n,), optional
        Distance uncertainty, pc, >= 0.
    inflation : array_like, shape (n,), optional
        Term added in quadrature to ``extinction_err``, mag, >= 0; default zeros.
    row_index : array_like of int, shape (n,), optional
        Row of the input table each star came from; default ``arange(n)``.
    dropped_rows : array_like of int, optional
        Input rows dropped as bad; default none.

    Attributes
    ----------
    l, b, distance, extinction, extinction_err_observed, distance_err, inflation, row_index, dropped_rows
        As above, read-only numpy arrays (``distance_err`` may be None).
    extinction_err : numpy.ndarray, shape (n,)
        The uncertainty to use in the likelihood, mag:
        :math:`\sqrt{\sigma_{A,\mathrm{obs}}^2 + \mathrm{inflation}^2}`.

    Raises
    ------
    CatalogError
        If arrays have the wrong shape or carry units, or a value is out of range (the message lists the
        rows).
    """

    __slots__ = (
        "_b",
        "_distance",
        "_distance_err",
        "_dropped_rows",
        "_extinction",
        "_extinction_err",
        "_extinction_err_observed",
        "_inflation",
        "_l",
        "_row_index",
    )

    def __init__(
        self,
        l: Any,
        b: Any,
        distance: Any,
        extinction: Any,
        extinction_err: Any,
        *,
        distance_err: Any | None = None,
        inflation: Any | None = None,
        row_index: Any | None = None,
        dropped_rows: Any | None = None,
    ) -> None:
        d = _readonly(distance, "distance", None)
        n = d.size
        l_arr = np.mod(np.asarray(_readonly(l, "l", n)), 360.0)
        l_arr[l_arr >= 360.0] = 0.0  # np.mod(-1e-17, 360) == 360.0
        l_arr.flags.writeable = False
        b_arr = _readonly(b, "b", n)
        a = _readonly(extinction, "extinction", n)
        sigma = _readonly(extinction_err, "extinction_err", n)
        sigma_d = None if distance_err is None else _readonly(distance_err, "distance_err", n)
        infl = _readonly(np.zeros(n) if inflation is None else inflation, "inflation", n)
        rows = _readonly(np.arange(n) if row_index is None else row_index, "row_index", n, dtype=np.int64)
        dropped = _readonly(
            np.zeros(0, dtype=np.int64) if dropped_rows is None else dropped_rows,
            "dropped_rows",
            None,
            np.int64,
        )

        problems: list[Problem] = []
        named = [("l", l_arr), ("b", b_arr), ("distance", d), ("extinction", a), ("extinction_err", sigma)]
        named += [("distance_err", sigma_d)] if sigma_d is not None else []
        named += [("inflation", infl)]
        for name, arr in named:
            check(problems, name, "finite values", "NaN or inf", ~np.isfinite(arr))
        check(problems, "b", "|b| <= 90 deg", "|b| > 90", np.abs(b_arr) > 90.0)
        check(problems, "distance", "distance > 0 pc", "distance <= 0", d <= 0.0)
        check_distance_plausible(problems, "distance", d)
        check_extinction_plausible(problems, "extinction", a)
        check(problems, "extinction_err", "extinction_err > 0 mag", "extinction_err <= 0", sigma <= 0.0)
        check_extinction_err_plausible(problems, "extinction_err", sigma)
        if sigma_d is not None:
            check(problems, "distance_err", "distance_err >= 0 pc", "distance_err < 0", sigma_d < 0.0)
        check(problems, "inflation", "inflation >= 0 mag", "inflation < 0", infl < 0.0)
        if problems:
            raise_problems(problems, n)

        total = np.hypot(sigma, infl)
        total.flags.writeable = False
        self._l, self._b, self._distance, self._extinction = l_arr, b_arr, d, a
        self._extinction_err_observed, self._extinction_err = sigma, total
        self._distance_err, self._inflation = sigma_d, infl
        self._row_index, self._dropped_rows = rows, dropped

    # ---- attributes --------------------------------------------------------------------------------------
    @property
    def l(self) -> np.ndarray:
        """Galactic longitude, deg, in [0, 360), shape (n,)."""
        return self._l

    @property
    def b(self) -> np.ndarray:
        """Galactic latitude, deg, shape (n,)."""
        return self._b

    @property
    def distance(self) -> np.ndarray:
        """Distance, pc, shape (n,)."""
        return self._distance

    @property
    def distance_err(self) -> np.ndarray | None:
        """Distance uncertainty (1 sigma), pc, shape (n,); None if the catalogue has none."""
        return self._distance_err

    @property
    def extinction(self) -> np.ndarray:
        """Observed extinction, mag, shape (n,)."""
        return self._extinction

    @property
    def extinction_err(self) -> np.ndarray:
        """Extinction uncertainty to use in the likelihood (observed ⊕ inflation), mag, shape (n,)."""
        return self._extinction_err

    @property
    def extinction_err_observed(self) -> np.ndarray:
        """Observed extinction uncertainty before distance inflation (after any floor), mag, shape (n,)."""
        return self._extinction_err_observed

    @property
    def inflation(self) -> np.ndarray:
        """Term added in quadrature to the observed extinction uncertainty, mag, shape (n,); zeros if none."""
        return self._inflation

    @property
    def row_index(self) -> np.ndarray:
        """Row of the input table (0-based) each star came from, shape (n,)."""
        return self._row_index

    @property
    def dropped_rows(self) -> np.ndarray:
        """Rows of the input table (0-based) dropped as bad when the catalogue was built."""
        return self._dropped_rows

    @property
    def coords(self) -> SkyCoord:
        """Positions as a :class:`~astropy.coordinates.SkyCoord` in the Galactic frame, with distance."""
        return SkyCoord(l=self._l * u.deg, b=self._b * u.deg, distance=self._distance * u.pc, frame="galactic")

    def __len__(self) -> int:
        return self._distance.size

    def __repr__(self) -> str:
        inflated = "inflated" if np.any(self._inflation > 0) else "not inflated"
        with_d = "with" if self._distance_err is not None else "without"
        return f"<Catalog: {len(self)} stars, {with_d} distance_err, extinction_err {inflated}>"

    # ---- friendly constructors ---------------------------------------------------------------------------
    # Defined in readers.py with the column mapping and the row checks they share, and bound here as classmethods
    # (as astropy binds Table.read, defined in astropy.table.connect).
    read = classmethod(readers.read)
    from_table = classmethod(readers.from_table)
    from_arrays = classmethod(readers.from_arrays)

    # ---- subsets -----------------------------------------------------------------------------------------
    def select(self, mask_or_indices: Any) -> Catalog:
        """A new catalogue holding the selected stars.

        Parameters
        ----------
        mask_or_indices : array_like of bool, shape (n,), or array_like of int
            A boolean mask over the stars, or star indices (positions in this catalogue, not input rows).

        Returns
        -------
        Catalog
            The selected stars, with their :attr:`row_index`, :attr:`inflation` and uncertainties;
            :attr:`dropped_rows` is carried over unchanged (it records the bad input rows).
        """
        sel = np.asarray(mask_or_indices)
        if sel.dtype == bool:
            if sel.shape != (len(self),):
                raise CatalogError(f"select: expected a boolean mask of shape ({len(self)},), got {sel.shape}")
            sel = np.flatnonzero(sel)
        elif sel.dtype.kind not in "iu" and sel.size:
            raise CatalogError(f"select: expected a boolean mask or integer indices, got dtype {sel.dtype}")
        sel = sel.astype(np.int64).ravel()
        return Catalog(
            self._l[sel],
            self._b[sel],
            self._distance[sel],
            self._extinction[sel],
            self._extinction_err_observed[sel],
            distance_err=None if self._distance_err is None else self._distance_err[sel],
            inflation=self._inflation[sel],
            row_index=self._row_index[sel],
            dropped_rows=self._dropped_rows,
        )

    def split(self, fraction: float, *, seed: int | np.random.Generator) -> tuple[Catalog, Catalog]:
        """Split the stars at random into two catalogues, reproducibly.

        Parameters
        ----------
        fraction : float
            Share of the stars in the first catalogue, 0 < fraction < 1; the first gets
            ``round(fraction * n)`` stars (at least 1 and at most n - 1 where n >= 2).
        seed : int or numpy.random.Generator
            Seed (or generator) of the random choice.

        Returns
        -------
        kept, held_out : Catalog
            The two parts; each keeps the stars in their original order.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"expected 0 < fraction < 1, got {fraction}")
        n = len(self)
        if n < 2:
            raise CatalogError(f"cannot split a catalogue of {n} star(s)")
        n_kept = min(max(round(fraction * n), 1), n - 1)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        mask = np.zeros(n, dtype=bool)
        mask[rng.permutation(n)[:n_kept]] = True
        return self.select(mask), self.select(~mask)

    # ---- distance inflation ------------------------------------------------------------------------------
    def inflate_for_distance(
        self,
        gradient: GradientSpec = None,
        *,
        neighbours: int = 32,
        candidates: int | None = None,
        window_sigma: float = 2.0,
        window_fraction: float = 0.1,
        min_neighbours: int = 5,
        max_separation: float | None = None,
    ) -> Catalog:
        r"""Fold the distance uncertainties into the extinction uncertainties.

        .. math::

            \sigma_i^2 = \sigma_{A,i}^2 + \left(\frac{dA}{dd}\Big|_{d_i}\right)^2 \sigma_{d,i}^2

        (docs: Method §1; Rezaei Kh. et al. 2020, Eqs. 1-2). The inflation always starts from
        :attr:`extinction_err_observed`, so applying it again replaces, not compounds, an earlier inflation.

        Parameters
        ----------
        gradient : None, callable, array_like or Quantity, optional
            dA/dd at each star, mag/pc. None (default): estimated from the catalogue with
            :func:`estimate_extinction_gradient` (see its Notes for the estimator). A callable
            ``gradient(l_deg, b_deg, d_pc)`` returning mag/pc at arrays of positions, e.g. the density of a
            previous map (for uniform cells, dA/dd at a star is the density in its cell). An array of shape
            (n,) (a Quantity is converted to mag/pc). Only the magnitude matters (the gradient is squared).
        neighbours, candidates, window_sigma, window_fraction, min_neighbours, max_separation
            Options of the data estimator, see :func:`estimate_extinction_gradient`; ignored when ``gradient``
            is given.

        Returns
        -------
        Catalog
            A new catalogue with the inflated :attr:`extinction_err` and the added term in :attr:`inflation`.

        Raises
        ------
        CatalogError
            If the catalogue has no distance uncertainties, or ``gradient`` has the wrong shape or non-finite
            values.
        """
        if self._distance_err is None:
            raise CatalogError("cannot inflate for distance: the catalogue has no distance uncertainties")
        n = len(self)
        if gradient is None:
            g = estimate_extinction_gradient(
                self._l,
                self._b,
                self._distance,
                self._extinction,
                self._extinction_err_observed,
                self._distance_err,
                neighbours=neighbours,
                candidates=candidates,
                window_sigma=window_sigma,
                window_fraction=window_fraction,
                min_neighbours=min_neighbours,
                max_separation=max_separation,
            )
        else:
            g = given_gradient(gradient, self._l, self._b, self._distance)
        inflation = np.abs(g) * self._distance_err
        if n:
            logger.info(
                "distance uncertainty folded into extinction uncertainty: added term median %.3g mag, "
                "90th percentile %.3g mag (observed sigma median %.3g mag)",
                np.median(inflation),
                np.percentile(inflation, 90),
                np.median(self._extinction_err_observed),
            )
        return Catalog(
            self._l,
            self._b,
            self._distance,
            self._extinction,
            self._extinction_err_observed,
            distance_err=self._distance_err,
            inflation=inflation,
            row_index=self._row_index,
            dropped_rows=self._dropped_rows,
        )

    # ---- output ------------------------------------------------------------------------------------------
    def to_table(self) -> Table:
        """The catalogue as an :class:`~astropy.table.Table` with units.

        Returns
        -------
        astropy.table.Table
            Columns ``l``, ``b`` (deg), ``distance`` (pc), ``distance_err`` (pc, if any), ``A0``, ``A0_err``
            (observed), ``A0_inflation``, ``A0_err_total`` (mag) and ``row_index``. The names match the
            defaults of :meth:`from_table`, so
            ``Catalog.from_table(cat.to_table(), distance_err="distance_err")`` rebuilds the catalogue
            (re-estimating the inflation).
        """
        table = Table()
        table["l"] = self._l.copy() * u.deg
        table["b"] = self._b.copy() * u.deg
        table["distance"] = self._distance.copy() * u.pc
        if self._distance_err is not None:
            table["distance_err"] = self._distance_err.copy() * u.pc
        table["A0"] = self._extinction.copy() * u.mag
        table["A0_err"] = self._extinction_err_observed.copy() * u.mag
        table["A0_inflation"] = self._inflation.copy() * u.mag
        table["A0_err_total"] = self._extinction_err.copy() * u.mag
        table["row_index"] = self._row_index.copy()
        table.meta["n_dropped_rows"] = int(self._dropped_rows.size)
        return table

    def summary(self) -> str:
        """A short multi-line description: number of stars, ranges, median uncertainties, inflation.

        Returns
        -------
        str
        """
        n = len(self)
        lines = [f"Catalog: {n} stars ({self._dropped_rows.size} input rows dropped)"]
        if n == 0:
            return lines[0]
        lines.append(
            f"  l {self._l.min():.2f} .. {self._l.max():.2f} deg, b {self._b.min():.2f} .. {self._b.max():.2f} deg"
        )
        d_line = f"  distance {self._distance.min():.4g} .. {self._distance.max():.4g} pc"
        d_line += f" (median {np.median(self._distance):.4g} pc"
        if self._distance_err is not None:
            d_line += f", median sigma_d {np.median(self._distance_err):.3g} pc"
        lines.append(d_line + ")")
        lines.append(
            f"  extinction {self._extinction.min():.3g} .. {self._extinction.max():.3g} mag "
            f"(median {np.median(self._extinction):.3g} mag)"
        )
        lines.append(
            f"  sigma_A median {np.median(self._extinction_err_observed):.3g} mag observed, "
            f"{np.median(self._extinction_err):.3g} mag used"
        )
        if np.any(self._inflation > 0):
            lines.append(
                f"  inflation (quadrature term) median {np.median(self._inflation):.3g} mag, "
                f"90th percentile {np.percentile(self._inflation, 90):.3g} mag, "
                f"max {self._inflation.max():.3g} mag"
            )
        else:
            lines.append("  inflation: none")
        return "\n".join(lines)
