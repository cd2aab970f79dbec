r"""The catalogue record: positions, distances and extinctions of stars with their uncertainties, in internal units.

:class:`Catalog` holds, per star, Galactic longitude ``l`` and latitude ``b`` (deg), distance (pc) with an
optional uncertainty ``distance_err`` (pc), optionally the parallax it came from with its error (mas), and observed
extinction ``A`` (mag) with its uncertainty (mag), as read-only float64 arrays. Its constructor is the strict core
on bare arrays; the friendly constructors :meth:`Catalog.read`, :meth:`Catalog.from_table` and
:meth:`Catalog.from_arrays` (:mod:`dustgp.catalog.readers`) take tables, named columns, units, percentile pairs
and parallaxes, and raise a :class:`~dustgp.catalog.CatalogError` that
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
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord

from . import output, readers
from .arrays import node_table, readonly
from .checks import (
    CatalogError,
    Problem,
    check,
    check_distance_plausible,
    check_extinction_err_plausible,
    check_extinction_plausible,
    raise_problems,
)
from .distances import PARALLAX_LENGTH_SCALE, lognormal_nodes, parallax_nodes, volume_prior_posterior
from .gradient import GradientSpec, estimate_extinction_gradient, given_gradient

__all__ = ["Catalog"]

logger = logging.getLogger(__name__)


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
    parallax, parallax_err : array_like, shape (n,), optional
        Parallax and its uncertainty, mas (finite; ``parallax_err`` > 0; any sign of parallax), given together: the
        stars' distance posteriors are then the parallax posteriors of :func:`~dustgp.catalog.parallax_nodes`,
        whose median and half 16-84% width the friendly constructors put in ``distance`` and ``distance_err``.
    parallax_length_scale : float, optional
        L of the exponentially decreasing space density prior of those posteriors, pc (default
        :data:`~dustgp.catalog.PARALLAX_LENGTH_SCALE`, 1350 pc).
    distance_node_cache : mapping of int to array_like of shape (n, k), optional
        Nodes of those posteriors already tabulated, pc, by the number k of nodes per star: what
        :func:`~dustgp.catalog.parallax_nodes` gives for these parallaxes and this length scale. Only with
        parallaxes. :meth:`distance_nodes` returns them rather than tabulate the posteriors again; they are
        checked for shape and finite positive values, not recomputed. The friendly constructors fill it for
        :data:`~dustgp.catalog.DISTANCE_NODES` nodes, and :meth:`select` and :meth:`inflate_for_distance` carry it.
    inflation : array_like, shape (n,), optional
        Term added in quadrature to ``extinction_err``, mag, >= 0; default zeros.
    row_index : array_like of int, shape (n,), optional
        Row of the input table each star came from; default ``arange(n)``.
    dropped_rows : array_like of int, optional
        Input rows dropped as bad; default none.

    Attributes
    ----------
    l, b, distance, extinction, extinction_err_observed, inflation, row_index, dropped_rows
        As above, read-only numpy arrays.
    distance_err, parallax, parallax_err
        As above, read-only numpy arrays, or None.
    parallax_length_scale : float
        As above, pc.
    distance_node_cache : mapping of int to numpy.ndarray
        The parallax posteriors' nodes tabulated so far, by k (read-only; empty without parallaxes).
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
        "_node_cache",
        "_parallax",
        "_parallax_err",
        "_parallax_length_scale",
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
        parallax: Any | None = None,
        parallax_err: Any | None = None,
        parallax_length_scale: float = PARALLAX_LENGTH_SCALE,
        distance_node_cache: Mapping[int, Any] | None = None,
        inflation: Any | None = None,
        row_index: Any | None = None,
        dropped_rows: Any | None = None,
    ) -> None:
        d = readonly(distance, "distance", None)
        n = d.size
        l_arr = np.mod(np.asarray(readonly(l, "l", n)), 360.0)
        l_arr[l_arr >= 360.0] = 0.0  # np.mod(-1e-17, 360) == 360.0
        l_arr.flags.writeable = False
        b_arr = readonly(b, "b", n)
        a = readonly(extinction, "extinction", n)
        sigma = readonly(extinction_err, "extinction_err", n)
        sigma_d = None if distance_err is None else readonly(distance_err, "distance_err", n)
        if (parallax is None) != (parallax_err is None):
            raise CatalogError("parallax and parallax_err: give both or neither")
        plx = None if parallax is None else readonly(parallax, "parallax", n)
        plx_err = None if parallax_err is None else readonly(parallax_err, "parallax_err", n)
        length = float(parallax_length_scale)
        if not (np.isfinite(length) and length > 0):
            raise CatalogError(f"parallax_length_scale: expected a finite value > 0 pc, got {parallax_length_scale!r}")
        if distance_node_cache and plx is None:
            raise CatalogError("distance_node_cache: nodes of parallax posteriors given without parallaxes")
        cache = {int(k): node_table(k, nodes, n) for k, nodes in (distance_node_cache or {}).items()}
        infl = readonly(np.zeros(n) if inflation is None else inflation, "inflation", n)
        rows = readonly(np.arange(n) if row_index is None else row_index, "row_index", n, dtype=np.int64)
        dropped = readonly(
            np.zeros(0, dtype=np.int64) if dropped_rows is None else dropped_rows,
            "dropped_rows",
            None,
            np.int64,
        )

        problems: list[Problem] = []
        named = [("l", l_arr), ("b", b_arr), ("distance", d), ("extinction", a), ("extinction_err", sigma)]
        named += [("distance_err", sigma_d)] if sigma_d is not None else []
        named += [("parallax", plx), ("parallax_err", plx_err)] if plx is not None else []
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
        if plx_err is not None:
            check(problems, "parallax_err", "parallax_err > 0 mas", "parallax_err <= 0", plx_err <= 0.0)
        check(problems, "inflation", "inflation >= 0 mag", "inflation < 0", infl < 0.0)
        if problems:
            raise_problems(problems, n)

        total = np.hypot(sigma, infl)
        total.flags.writeable = False
        self._l, self._b, self._distance, self._extinction = l_arr, b_arr, d, a
        self._extinction_err_observed, self._extinction_err = sigma, total
        self._distance_err, self._inflation = sigma_d, infl
        self._parallax, self._parallax_err, self._parallax_length_scale = plx, plx_err, length
        self._node_cache = cache
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
    def parallax(self) -> np.ndarray | None:
        """Parallax the distance posterior comes from, mas, shape (n,); None if the catalogue has none."""
        return self._parallax

    @property
    def parallax_err(self) -> np.ndarray | None:
        """Parallax uncertainty (1 sigma), mas, shape (n,); None if the catalogue has no parallaxes."""
        return self._parallax_err

    @property
    def parallax_length_scale(self) -> float:
        """L of the space density prior ``d² exp(-d/L)`` of the parallax posteriors, pc."""
        return self._parallax_length_scale

    @property
    def distance_node_cache(self) -> Mapping[int, np.ndarray]:
        """Nodes of the parallax posteriors tabulated so far (pc, read-only, shape (n, k)), by k; empty without
        parallaxes. See :meth:`distance_nodes`."""
        return MappingProxyType(self._node_cache)

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
        plx = ", distances from parallaxes" if self._parallax is not None else ""
        return f"<Catalog: {len(self)} stars, {with_d} distance_err{plx}, extinction_err {inflated}>"

    def distance_nodes(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Equal-mass nodes of each star's distance posterior, as the likelihood and held-out checks average over.

        From the parallaxes when the catalogue has them (:func:`~dustgp.catalog.parallax_nodes`, with
        :attr:`parallax_length_scale`), else the log-normal posterior of :attr:`distance` and
        :attr:`distance_err` (:func:`~dustgp.catalog.lognormal_nodes`). Tabulating parallax posteriors costs about
        a minute per 10⁶ stars, so their nodes are kept per k (:attr:`distance_node_cache`): the catalogue's
        subsets and inflated copies share them, and a fit, its coarse stage and its tiles tabulate none again.

        Parameters
        ----------
        k : int
            Nodes per star.

        Returns
        -------
        nodes : numpy.ndarray, shape (n, k)
            pc, ascending along each row; read-only from parallaxes (the cached table).
        log_weights : numpy.ndarray, shape (n, k)
            ``ln(1/k)``.

        Raises
        ------
        CatalogError
            If the catalogue has neither parallaxes nor distance uncertainties.
        """
        if self._parallax is not None:
            nodes = self._node_cache.get(int(k))
            if nodes is None:  # tabulated once per k, then shared (the record is read-only, the cache only grows)
                nodes, _ = parallax_nodes(
                    self._parallax, self._parallax_err, k, length_scale=self._parallax_length_scale
                )
                nodes.flags.writeable = False
                self._node_cache[int(k)] = nodes
            return nodes, np.full(nodes.shape, -math.log(k))
        if self._distance_err is None:
            raise CatalogError("no distance posterior: the catalogue has neither parallaxes nor distance_err")
        return lognormal_nodes(self._distance, self._distance_err, k)

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
        return self._replace(lambda values: None if values is None else values[sel])

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
        return self._replace(lambda values: values, inflation=inflation)

    def with_volume_prior(self) -> Catalog:
        """Distances as measurements under a uniform space density (:func:`~.distances.volume_prior_posterior`)."""
        if self._parallax is not None or self._distance_err is None:
            raise CatalogError("with_volume_prior: expected distance uncertainties (distance_err), no parallaxes")
        distance, distance_err = volume_prior_posterior(self._distance, self._distance_err)
        return self._replace(lambda values: values, distance=distance, distance_err=distance_err)

    def _replace(self, per_star: Any, **changes: Any) -> Catalog:
        """A new catalogue of ``per_star(array)`` for each per-star array (None stays None), then ``changes``."""
        arrays = {
            "l": self._l,
            "b": self._b,
            "distance": self._distance,
            "extinction": self._extinction,
            "extinction_err": self._extinction_err_observed,
            "distance_err": self._distance_err,
            "parallax": self._parallax,
            "parallax_err": self._parallax_err,
            "inflation": self._inflation,
            "row_index": self._row_index,
        }
        fields = {name: per_star(values) for name, values in arrays.items()} | changes
        cache = {k: per_star(nodes) for k, nodes in self._node_cache.items()}
        return Catalog(
            **fields,
            parallax_length_scale=self._parallax_length_scale,
            distance_node_cache=cache,
            dropped_rows=self._dropped_rows,
        )

    # ---- output ------------------------------------------------------------------------------------------
    # Defined in output.py (the catalogue written out) and bound here as methods, as the readers are.
    to_table = output.to_table
    summary = output.summary
