"""The record of a simulated sky: its truth (region, background, structures) and its observations (catalogue,
true extinctions and distances, outliers). See :mod:`dustgp.simulate`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import Table

from ..catalog import Catalog
from ..grid import Grid
from .structures import Clump, Structure, _structure_record, true_density

__all__ = ["SimulatedSky"]


@dataclass(frozen=True)
class SimulatedSky:
    """Truth and observations of a simulated sky.

    Attributes
    ----------
    region : Grid
        The truth grid (no ghost cells; density is zero in front of ``region.d_min`` unless ``foreground``).
    background : float
        Background density, mag/pc.
    structures : tuple of Structure
        The overdensities above the background.
    catalog : Catalog
        The observations: scattered distances (with ``distance_err`` when distance errors were simulated),
        noisy extinctions (with outliers when asked), not inflated for distance.
    true_extinction : numpy.ndarray, shape (n,)
        Noise-free extinction to each star of ``catalog`` at its true distance, mag.
    seed : int
    foreground : bool
        Whether the background fills 0 .. ``region.d_min``.
    true_distance : numpy.ndarray, shape (n,)
        True distance of each star, pc (``catalog.distance`` when no distance errors were simulated).
    outlier : numpy.ndarray of bool, shape (n,)
        Stars given an outlier offset.
    outlier_offset : numpy.ndarray, shape (n,)
        Extinction added to each star beyond its noise, mag (0 for the others).
    distance_lower, distance_upper : numpy.ndarray, shape (n,), or None
        Reported 16th and 84th percentiles of each star's distance, pc; None without distance errors.
    """

    region: Grid
    background: float
    structures: tuple[Structure, ...]
    catalog: Catalog
    true_extinction: np.ndarray
    seed: int
    foreground: bool = True
    true_distance: np.ndarray = field(default=None)  # type: ignore[assignment]  # filled in __post_init__
    outlier: np.ndarray = field(default=None)  # type: ignore[assignment]
    outlier_offset: np.ndarray = field(default=None)  # type: ignore[assignment]
    distance_lower: np.ndarray | None = None
    distance_upper: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.catalog)
        if self.true_distance is None:
            object.__setattr__(self, "true_distance", self.catalog.distance)
        if self.outlier is None:
            object.__setattr__(self, "outlier", np.zeros(n, dtype=bool))
        if self.outlier_offset is None:
            object.__setattr__(self, "outlier_offset", np.zeros(n))

    @property
    def clumps(self) -> tuple[Clump, ...]:
        """The :class:`Clump` structures (all of them in the paper's sky)."""
        return tuple(s for s in self.structures if isinstance(s, Clump))

    def structure(self, name: str) -> Structure:
        """The structure called ``name`` (the first, if several share it)."""
        for s in self.structures:
            if s.name == name:
                return s
        raise KeyError(f"no structure named {name!r}; known: {', '.join(s.name for s in self.structures)}")

    def peak_distance(self, name: str, l: float | None = None, b: float | None = None) -> float:
        """Distance (pc) of structure ``name``'s densest point on sightline (l, b) (default its own), to 0.05 pc."""
        return self.structure(name).peak_distance(l, b, d_range=(0.0, self.region.d_max))

    def density_at(self, l: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
        """True density (mag/pc) at positions (deg, deg, pc)."""
        return true_density(
            l,
            b,
            d,
            region=self.region,
            background=self.background,
            structures=self.structures,
            foreground=self.foreground,
        )

    def density_on(self, grid: Grid) -> np.ndarray:
        """True density at the cell centres of ``grid``, shape ``grid.shape``, mag/pc."""
        return self.density_at(*grid.cell_centers_lbd())

    def extinction_on(self, grid: Grid) -> np.ndarray:
        """True extinction to the far edge of every cell of ``grid``, shape ``grid.shape``, mag.

        Integrated on ``grid`` itself with cell-centre densities, like the model does.
        """
        rho = self.density_on(grid)
        return np.cumsum(rho * grid.path_lengths[:, None, None], axis=0)

    def structure_records(self) -> list[dict[str, Any]]:
        """The structures as plain dicts (``type`` plus the fields), e.g. for a table's metadata."""
        return [_structure_record(s) for s in self.structures]

    def to_table(self) -> Table:
        """The catalogue with its truth, as an :class:`~astropy.table.Table` with units.

        Returns
        -------
        astropy.table.Table
            The columns of :meth:`Catalog.to_table`, plus ``A0_true`` (mag); with distance errors
            ``distance_lower``, ``distance_upper`` (reported 16th/84th percentiles) and ``distance_true`` (pc);
            with outliers ``outlier`` (bool) and ``A0_outlier_offset`` (mag). Metadata: ``dustgp_seed``,
            ``background`` (mag/pc), ``foreground`` and ``structures`` (JSON, :meth:`structure_records`).
        """
        table = self.catalog.to_table()
        table["A0_true"] = self.true_extinction * u.mag
        if self.distance_lower is not None and self.distance_upper is not None:
            table["distance_lower"] = self.distance_lower * u.pc
            table["distance_upper"] = self.distance_upper * u.pc
            table["distance_true"] = self.true_distance * u.pc
        if self.outlier.any():
            table["outlier"] = self.outlier
            table["A0_outlier_offset"] = self.outlier_offset * u.mag
        table.meta["dustgp_seed"] = self.seed
        table.meta["background"] = self.background
        table.meta["foreground"] = self.foreground
        table.meta["structures"] = json.dumps(self.structure_records())
        return table
