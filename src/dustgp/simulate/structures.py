r"""The shapes of a simulated truth: overdensities (:class:`Clump`, :class:`Filament`, :class:`Sheet`) above a
constant background, and the total density they make (:func:`true_density`). See :mod:`dustgp.simulate`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import erf

from ..grid import Grid, lbd_to_xyz

__all__ = ["Clump", "Filament", "Sheet", "Structure", "true_density"]


def _xyz_to_lb(xyz: np.ndarray) -> tuple[float, float]:
    """Galactic (l, b) in deg of a heliocentric Cartesian position (pc), l in [0, 360)."""
    x, y, z = (float(v) for v in xyz)
    return float(np.degrees(np.arctan2(y, x)) % 360.0), float(np.degrees(np.arctan2(z, np.hypot(x, y))))


class Structure(ABC):
    """An overdensity of a simulated truth: density above the background, mag/pc, anywhere in space.

    Subclasses are frozen dataclasses with a ``name`` and a ``peak`` density (mag/pc).
    """

    name: str
    peak: float

    @abstractmethod
    def _density(self, xyz: np.ndarray, l: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Density (mag/pc) at heliocentric Cartesian ``xyz`` (pc, shape (..., 3)), equally at (l, b, d)."""

    @abstractmethod
    def sightline(self) -> tuple[float, float]:
        """The direction (l, b), deg, through the structure's densest point."""

    def density_at(self, l: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Density of this structure alone (mag/pc, above the background) at (deg, deg, pc), broadcast shape."""
        l, b, d = np.broadcast_arrays(np.asarray(l, float), np.asarray(b, float), np.asarray(d, float))
        return self._density(lbd_to_xyz(l, b, d), l, b, d)

    def peak_distance(
        self,
        l: float | None = None,
        b: float | None = None,
        *,
        d_range: tuple[float, float] = (0.0, 2000.0),
        resolution: float = 0.05,
    ) -> float:
        """Distance (pc) of this structure's densest point along the sightline (l, b).

        Parameters
        ----------
        l, b : float, optional
            Sightline, deg; default :meth:`sightline`.
        d_range : tuple of float
            Distances searched, pc.
        resolution : float
            Step of the search, pc: the answer is exact to half of it.

        Returns
        -------
        float
            The distance, pc; NaN if the structure has no density above 1e-12 of its peak on the sightline.
        """
        if l is None or b is None:
            l, b = self.sightline()
        d = np.arange(d_range[0], d_range[1] + resolution, resolution)
        rho = self.density_at(np.full_like(d, l), np.full_like(d, b), d)
        i = int(np.argmax(rho))
        return float(d[i]) if rho[i] > 1e-12 * abs(self.peak) else float("nan")


@dataclass(frozen=True)
class Clump(Structure):
    """An isotropic Gaussian overdensity: ``peak * exp(-|x - center|² / (2 sigma²))``.

    Attributes
    ----------
    center : tuple of float
        Heliocentric Cartesian centre, pc.
    sigma : float
        Gaussian width, pc.
    peak : float
        Peak extinction density above the background, mag/pc.
    name : str
        A label (e.g. ``'core'``), for reports.
    """

    center: tuple[float, float, float]
    sigma: float
    peak: float
    name: str = "clump"

    def _density(self, xyz: np.ndarray, l: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
        r2 = ((xyz - np.asarray(self.center)) ** 2).sum(-1)
        return self.peak * np.exp(-0.5 * r2 / self.sigma**2)

    def sightline(self) -> tuple[float, float]:
        return _xyz_to_lb(np.asarray(self.center))


@dataclass(frozen=True)
class Filament(Structure):
    r"""An elongated overdensity: a Gaussian tube of width ``sigma`` around the segment ``start``-``end``.

    .. math:: \rho(\mathbf{x}) = \rho_\mathrm{peak}\,\exp\!\left(-\frac{r_\perp(\mathbf{x})^2}{2\sigma^2}\right),

    with :math:`r_\perp` the distance from :math:`\mathbf{x}` to the nearest point of the segment (so the ends
    are rounded, half-Gaussian caps).

    Attributes
    ----------
    start, end : tuple of float
        Heliocentric Cartesian end points of the axis, pc.
    sigma : float
        Gaussian half-width across the axis, pc.
    peak : float
        Density on the axis above the background, mag/pc.
    name : str
        A label, for reports.
    """

    start: tuple[float, float, float]
    end: tuple[float, float, float]
    sigma: float
    peak: float
    name: str = "filament"

    def _density(self, xyz: np.ndarray, l: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
        start, axis = np.asarray(self.start), np.asarray(self.end) - np.asarray(self.start)
        offset = xyz - start
        t = np.clip((offset @ axis) / (axis @ axis), 0.0, 1.0)
        r2 = ((offset - t[..., None] * axis) ** 2).sum(-1)
        return self.peak * np.exp(-0.5 * r2 / self.sigma**2)

    def sightline(self) -> tuple[float, float]:
        """The direction of the axis' midpoint."""
        return _xyz_to_lb(0.5 * (np.asarray(self.start) + np.asarray(self.end)))


def _soft_box(x: np.ndarray, lo: float, hi: float, edge: float) -> np.ndarray:
    """1 inside [lo, hi], 0 far outside, with Gaussian-blurred edges of width ``edge`` (erf steps)."""
    scale = np.sqrt(2.0) * edge
    return 0.5 * (erf((x - lo) / scale) - erf((x - hi) / scale))


@dataclass(frozen=True)
class Sheet(Structure):
    r"""A sheet thin in distance and wide on the sky: a Gaussian shell segment around the Sun.

    .. math::

        \rho(l, b, d) = \rho_\mathrm{peak}\,\exp\!\left(-\frac{(d - d_0)^2}{2 t^2}\right)
        \,B(l; l_\mathrm{lo}, l_\mathrm{hi})\,B(b; b_\mathrm{lo}, b_\mathrm{hi}),

    with :math:`B` a box on the sky with erf edges of width ``edge`` (1 inside, 0 outside). The density peaks at
    :math:`d_0` on every sightline inside the box, like the walls of the Local Bubble seen from inside.

    Attributes
    ----------
    distance : float
        Heliocentric distance of the sheet's centre plane, pc.
    thickness : float
        Gaussian half-thickness in distance, pc.
    peak : float
        Density above the background in the sheet, mag/pc.
    l_range, b_range : tuple of float
        Extent on the sky, deg (``l_range`` may cross 0: e.g. (-10, 10) or (350, 370)).
    edge : float
        Width of the soft edges on the sky, deg.
    name : str
        A label, for reports.
    """

    distance: float
    thickness: float
    peak: float
    l_range: tuple[float, float]
    b_range: tuple[float, float]
    edge: float = 1.0
    name: str = "sheet"

    def _density(self, xyz: np.ndarray, l: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
        l_mid = 0.5 * (self.l_range[0] + self.l_range[1])
        half = 0.5 * (self.l_range[1] - self.l_range[0])
        dl = np.mod(l - l_mid + 180.0, 360.0) - 180.0  # longitude relative to the box centre, in [-180, 180)
        sky = _soft_box(dl, -half, half, self.edge) * _soft_box(b, *self.b_range, self.edge)
        return self.peak * np.exp(-0.5 * ((d - self.distance) / self.thickness) ** 2) * sky

    def sightline(self) -> tuple[float, float]:
        """The centre of the box on the sky."""
        return float(np.mod(0.5 * (self.l_range[0] + self.l_range[1]), 360.0)), 0.5 * sum(self.b_range)


def _structure_record(structure: Structure) -> dict[str, Any]:
    """A structure as a plain dict with its type, for table metadata and reports."""
    return {"type": type(structure).__name__, **asdict(structure)}  # type: ignore[call-overload]


def true_density(
    l: np.ndarray,
    b: np.ndarray,
    d: np.ndarray,
    *,
    region: Grid,
    background: float,
    structures: Sequence[Structure],
    foreground: bool = True,
) -> np.ndarray:
    """Background plus structures at (deg, deg, pc), mag/pc; zero beyond the region (and in front of it
    unless ``foreground``)."""
    l, b, d = (np.asarray(v, float) for v in (l, b, d))
    xyz = lbd_to_xyz(l, b, d)
    rho = np.full(xyz.shape[:-1], background)
    for structure in structures:
        rho += structure._density(xyz, l, b, d)
    d_lo = 0.0 if foreground else region.d_min
    return np.where((d >= d_lo) & (d <= region.d_max), rho, 0.0)
