r"""Simulated skies with known truth: the paper's Section 3 experiment (docs: Method §9), and a realistic region.

Truth: a constant background density plus overdensities (:class:`Structure`). Two skies are built in:

* ``structures="random"`` (the default, the paper's Section 3): a 1.6e-3 mag/pc background (0.5 mag across
  180-500 pc) plus ``n_clumps`` isotropic Gaussian clumps at random places in the region;
* ``structures="realistic"`` (:func:`realistic_region`): over a low background (3e-4 mag/pc), an elongated
  filament, a dense compact core, a near sheet (thin in distance, wide on the sky) and a far clump, placed at
  fixed fractions of the region's axes so that no structure lies on another's central sightline.

Any tuple of :class:`Clump`, :class:`Filament` and :class:`Sheet` may be given instead. The background fills the
foreground too (0 .. d_min), as a uniform interstellar medium would; ``foreground=False`` empties it instead.

Stars are uniform in l, b and in d³ (uniform space density); their extinction is integrated on a fine truth grid
(100 × 100 × 115 cells in the paper) with the same partial-cell rule the model uses. The observation model, each
part off unless asked except the first:

1. **Extinction noise** (the paper: ``noise = 0.1``, ``noise_floor = 0``): Gaussian, with

   .. math:: \sigma_{A,i} = \sqrt{\sigma_\mathrm{floor}^2 + (f_A\,A_{\mathrm{true},i})^2} .

2. **Distance errors** (``distance_errors = (f_min, f_max)``), Gaia-like: each star gets a fractional 1-sigma
   error :math:`f_i` in [f_min, f_max] (log-uniform, or growing log-linearly with distance), and its catalogue
   distance is scattered log-normally from the true one,

   .. math:: \ln d_{\mathrm{obs},i} = \ln d_{\mathrm{true},i} + f_i\,\varepsilon_i, \quad
             \varepsilon_i \sim \mathcal{N}(0, 1).

   Log-normal, because the distance posteriors of parallax-based catalogues (Bailer-Jones et al. 2021;
   Anders et al. 2022) are skewed to large distances, and because it keeps every distance positive. The
   catalogue reports :math:`\sigma_{d,i} = f_i\,d_{\mathrm{obs},i}` and the 16th/84th percentiles
   :math:`d_{\mathrm{obs},i}\,e^{\mp f_i}` (those of :math:`d_\mathrm{true}` given :math:`d_\mathrm{obs}` under a
   prior flat in :math:`\ln d`; their half-difference :math:`d_\mathrm{obs}\sinh f_i` is within 0.7% of
   :math:`\sigma_{d,i}` for :math:`f_i \le 0.2`). The reported errors are exact: the scatter is what they say.
   Extinction stays that to the *true* distance; stars scattered off the region stay in the catalogue.

3. **Outliers** (``outlier_fraction > 0``): that share of the stars (exactly ``round(fraction × n)``, chosen
   at random) get :math:`\mathcal{U}(a_\mathrm{lo}, a_\mathrm{hi})` mag (default 0.3-1.5) added to their
   observed extinction with their quoted sigma unchanged, as circumstellar dust, bad photometry or an unresolved
   binary would do.

Random numbers come from generators seeded by ``seed`` only (never numpy's global state). The paper's draws
(clumps, positions, extinction noise) come from ``numpy.random.default_rng(seed)`` in a fixed order, and the
distance errors and the outliers from two further independent streams spawned from ``SeedSequence(seed)``, so
neither option changes any other draw: a sky with distance errors and outliers has the same stars, truth and
extinction noise as its clean twin (the same call without those options), and the paper's sky is the same
whatever new options exist.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import astropy.units as u
import numpy as np
import torch
from astropy.table import Table
from scipy.special import erf

from .catalog import Catalog
from .grid import Grid, lbd_to_xyz
from .sightlines import Sightlines

__all__ = [
    "Clump",
    "Filament",
    "Sheet",
    "SimulatedSky",
    "Structure",
    "paper_experiment",
    "realistic_region",
    "simulate",
    "true_density",
]

BACKGROUND = 1.6e-3  # mag/pc, paper Sect. 3
#: Background density of the realistic region, mag/pc: 0.1 mag across 180-500 pc, so that the structures
#: carry most of the extinction, as in the solar neighbourhood's dust (Edenhofer et al. 2024).
REALISTIC_BACKGROUND = 3e-4

StructureSpec = Literal["random", "realistic"]
DistanceErrorModel = Literal["log-uniform", "distance"]


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


def realistic_region(region: Grid) -> tuple[Structure, ...]:
    """A filament, a dense core, a near sheet and a far clump, placed inside ``region``.

    Positions are fractions ``(fl, fb, fd)`` of the region's l, b and d ranges, sizes fractions of its smallest
    extent ``s`` in pc (across l or b at mid-distance, or in depth; 119 pc in the paper's region, where the
    figures in brackets hold):

    ========== ====================================== ============== ===========================
    name       where (fl, fb, fd)                     size           peak, mag/pc (column, mag)
    ========== ====================================== ============== ===========================
    near sheet d at fd = 0.12, sky box fl 0.05-0.45,  t = 0.06 s     0.02 (0.36 through it)
               fb 0.45-0.95                           (7.2 pc)
    filament   axis (0.10, 0.15, 0.45)-(0.75, 0.40,   σ = 0.08 s     0.015 (0.36 across its axis)
               0.55)                                  (9.5 pc)
    core       (0.70, 0.72, 0.30)                     σ = 0.07 s     0.06 (1.25 through its centre)
                                                      (8.3 pc)
    far clump  (0.88, 0.25, 0.82)                     σ = 0.15 s     0.015 (0.67 through its centre)
                                                      (18 pc)
    ========== ====================================== ============== ===========================

    No structure lies on another's :meth:`~Structure.sightline`, so the densest point along each one's sightline
    is its own. Pair with :data:`REALISTIC_BACKGROUND`.

    Parameters
    ----------
    region : Grid
        The truth region (ghost cells ignored).

    Returns
    -------
    tuple of Structure
        ``(sheet, filament, core, far clump)``, named ``'near sheet'``, ``'filament'``, ``'core'``, ``'far clump'``.
    """
    region = region.with_ghost_cells(0)
    l_lo, l_hi = float(region.l_edges[0]), float(region.l_edges[-1])
    b_lo, b_hi = float(region.b_edges[0]), float(region.b_edges[-1])
    d_lo, d_hi = region.d_min, region.d_max
    d_mid = 0.5 * (d_lo + d_hi)
    b_far = max(abs(b_lo), abs(b_hi))  # the narrowest longitude extent is at the largest |b|
    s = min(
        d_hi - d_lo,
        d_mid * np.radians(l_hi - l_lo) * np.cos(np.radians(min(b_far, 89.0))),
        d_mid * np.radians(b_hi - b_lo),
    )

    def l_at(f: float) -> float:
        return l_lo + f * (l_hi - l_lo)

    def b_at(f: float) -> float:
        return b_lo + f * (b_hi - b_lo)

    def at(fl: float, fb: float, fd: float) -> tuple[float, float, float]:
        x, y, z = lbd_to_xyz(l_at(fl), b_at(fb), d_lo + fd * (d_hi - d_lo))
        return float(x), float(y), float(z)

    edge = 0.04 * min(l_hi - l_lo, b_hi - b_lo)
    return (
        Sheet(
            d_lo + 0.12 * (d_hi - d_lo),
            0.06 * s,
            0.02,
            (l_at(0.05), l_at(0.45)),
            (b_at(0.45), b_at(0.95)),
            edge=edge,
            name="near sheet",
        ),
        Filament(at(0.10, 0.15, 0.45), at(0.75, 0.40, 0.55), 0.08 * s, 0.015, name="filament"),
        Clump(at(0.70, 0.72, 0.30), 0.07 * s, 0.06, name="core"),
        Clump(at(0.88, 0.25, 0.82), 0.15 * s, 0.015, name="far clump"),
    )


def _truth_extinction(region: Grid, density: np.ndarray, l: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
    sightlines = Sightlines.from_positions(region, l, b, d)
    if len(sightlines) != len(l) or sightlines.n_in_ghost_cells:
        raise ValueError("simulated stars must lie inside the truth grid")
    return sightlines.extinction(torch.as_tensor(density)).numpy()


def _pair(value: Sequence[float], name: str, unit: str) -> tuple[float, float]:
    """A (lo, hi) option as two floats, checked to have two finite values with lo <= hi."""
    values = tuple(float(v) for v in value)
    if len(values) != 2 or not all(np.isfinite(values)) or values[0] > values[1]:
        raise ValueError(f"{name}: expected (lo, hi) with lo <= hi, finite, {unit}; got {tuple(value)}")
    return values[0], values[1]


def _check_options(
    noise: float,
    noise_floor: float,
    distance_errors: Sequence[float] | None,
    distance_error_model: str,
    outlier_fraction: float,
    outlier_amplitude: Sequence[float],
) -> tuple[tuple[float, float] | None, tuple[float, float]]:
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise: expected a fraction >= 0, got {noise}")
    if not (np.isfinite(noise_floor) and noise_floor >= 0):
        raise ValueError(f"noise_floor: expected an uncertainty >= 0 mag, got {noise_floor}")
    if noise == 0 and noise_floor == 0:
        raise ValueError("noise and noise_floor are both 0: expected at least one > 0 (stars need an uncertainty)")
    errors = None
    if distance_errors is not None:
        errors = _pair(distance_errors, "distance_errors", "fractions of the distance")
        if not (errors[0] > 0 and errors[1] < 1):
            raise ValueError(f"distance_errors: expected fractions with 0 < lo <= hi < 1, got {tuple(distance_errors)}")
    if distance_error_model not in ("log-uniform", "distance"):
        raise ValueError(f"distance_error_model: expected 'log-uniform' or 'distance', got {distance_error_model!r}")
    if not (0 <= outlier_fraction <= 1):
        raise ValueError(f"outlier_fraction: expected a fraction in [0, 1], got {outlier_fraction}")
    amplitude = _pair(outlier_amplitude, "outlier_amplitude", "mag")
    return errors, amplitude


def simulate(
    region: Grid,
    *,
    n_stars: int = 120_000,
    structures: StructureSpec | tuple[Structure, ...] = "random",
    n_clumps: int = 3,
    background: float | None = None,
    clump_sigma: tuple[float, float] = (20.0, 35.0),
    clump_peak: tuple[float, float] = (8e-3, 2.4e-2),
    noise: float = 0.1,
    noise_floor: float = 0.0,
    distance_errors: tuple[float, float] | None = None,
    distance_error_model: DistanceErrorModel = "log-uniform",
    outlier_fraction: float = 0.0,
    outlier_amplitude: tuple[float, float] = (0.3, 1.5),
    foreground: bool = True,
    seed: int = 0,
) -> SimulatedSky:
    r"""Draw a simulated sky over ``region``.

    With only ``region``, ``n_stars``, ``n_clumps``, ``clump_*``, ``noise``, ``foreground`` and ``seed`` given this
    is the paper's Section 3 sky, draw for draw.

    Parameters
    ----------
    region : Grid
        Truth grid; its distance range is where dust and stars are. Ghost cells of ``region`` are ignored.
    n_stars : int
        Stars uniform in l, in b (as in the paper) and in d³.
    structures : {'random', 'realistic'} or tuple of Structure
        ``'random'``: ``n_clumps`` Gaussian clumps drawn at random (the paper). ``'realistic'``: the
        filament, core, near sheet and far clump of :func:`realistic_region`. A tuple: those structures.
    n_clumps : int
        For ``structures='random'``: Gaussian overdensities, centres uniform in (l, b, d) over the inner 80% of
        each axis of the region. Ignored otherwise.
    background : float, optional
        Density inside the region, mag/pc; default 1.6e-3 (the paper), or :data:`REALISTIC_BACKGROUND`
        (3e-4) for ``structures='realistic'``.
    clump_sigma, clump_peak : tuple of float
        For ``structures='random'``: ranges (uniform) of clump widths, pc, and peak densities above the
        background, mag/pc. Ignored otherwise.
    noise : float
        Fractional extinction noise :math:`f_A` (the paper: 0.1).
    noise_floor : float
        Extinction noise floor :math:`\sigma_\mathrm{floor}`, mag, added in quadrature:
        :math:`\sigma_{A,i} = \sqrt{\sigma_\mathrm{floor}^2 + (f_A A_{\mathrm{true},i})^2}` (the paper: 0).
    distance_errors : tuple of float, optional
        Range (f_min, f_max) of the stars' fractional 1-sigma distance errors, 0 < f_min <= f_max < 1 (Gaia-like:
        (0.05, 0.20)); the catalogue distances are then scattered (see the module notes) and carry
        ``distance_err``. Default: none, distances exact.
    distance_error_model : {'log-uniform', 'distance'}
        How each star's fractional error is drawn: ``'log-uniform'`` in [f_min, f_max] independently of
        distance; ``'distance'`` growing log-linearly with true distance, f_min at ``region.d_min`` to f_max at
        ``region.d_max`` (as parallax errors make it for stars of one brightness).
    outlier_fraction : float
        Share of stars, in [0, 1], given an outlier offset; default 0 (none).
    outlier_amplitude : tuple of float
        Range (lo, hi) of the offsets, mag, drawn uniformly (default 0.3-1.5 mag).
    foreground : bool
        Fill 0 .. d_min with the background density (True) or leave it empty.
    seed : int
        Seed of every random draw.

    Returns
    -------
    SimulatedSky

    Raises
    ------
    ValueError
        An option out of range (the message names it and what was expected).
    """
    errors, amplitude = _check_options(
        noise, noise_floor, distance_errors, distance_error_model, outlier_fraction, outlier_amplitude
    )
    rng = np.random.default_rng(seed)
    region = region.with_ghost_cells(0)
    l_lo, l_hi = region.l_edges[0], region.l_edges[-1]
    b_lo, b_hi = region.b_edges[0], region.b_edges[-1]
    d_lo, d_hi = region.d_min, region.d_max

    def inner(lo: float, hi: float, size: int) -> np.ndarray:
        pad = 0.1 * (hi - lo)
        return rng.uniform(lo + pad, hi - pad, size)

    chosen: tuple[Structure, ...]
    if structures == "random":
        centres = lbd_to_xyz(inner(l_lo, l_hi, n_clumps), inner(b_lo, b_hi, n_clumps), inner(d_lo, d_hi, n_clumps))
        chosen = tuple(
            Clump(tuple(map(float, c)), float(rng.uniform(*clump_sigma)), float(rng.uniform(*clump_peak)))
            for c in centres
        )
    elif structures == "realistic":
        chosen = realistic_region(region)
    elif not isinstance(structures, str) and all(isinstance(s, Structure) for s in structures):
        chosen = tuple(structures)
    else:
        raise ValueError(f"structures: expected 'random', 'realistic' or a tuple of Structure, got {structures!r}")
    if background is None:
        background = REALISTIC_BACKGROUND if structures == "realistic" else BACKGROUND

    l = rng.uniform(l_lo, l_hi, n_stars) % 360.0
    b = rng.uniform(b_lo, b_hi, n_stars)
    d = np.cbrt(rng.uniform(d_lo**3, d_hi**3, n_stars))
    # one foreground cell 0 .. d_min in front of the truth grid carries the foreground dust
    with_front = region.with_ghost_cells(1)
    truth_grid = true_density(
        *with_front.cell_centers_lbd(),
        region=region,
        background=background,
        structures=chosen,
        foreground=foreground,
    )
    truth = _truth_extinction(with_front, truth_grid, l, b, d)
    sigma = np.hypot(noise_floor, noise * truth)  # == noise * truth exactly when noise_floor == 0
    observed = truth + sigma * rng.standard_normal(n_stars)

    # Further draws come from their own streams, so that each option leaves the other draws as they were.
    distance_rng, outlier_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    outlier = np.zeros(n_stars, dtype=bool)
    offset = np.zeros(n_stars)
    if outlier_fraction > 0:
        chosen_stars = outlier_rng.choice(n_stars, size=round(outlier_fraction * n_stars), replace=False)
        outlier[chosen_stars] = True
        offset[chosen_stars] = outlier_rng.uniform(*amplitude, chosen_stars.size)
        observed = observed + offset

    if errors is None:
        catalog = Catalog.from_arrays(l, b, d, observed, sigma)
        return SimulatedSky(
            region, background, chosen, catalog, truth, seed, foreground, d, outlier, offset, None, None
        )
    f_lo, f_hi = errors
    if distance_error_model == "log-uniform":
        frac = np.exp(distance_rng.uniform(np.log(f_lo), np.log(f_hi), n_stars))
    else:
        frac = f_lo * (f_hi / f_lo) ** np.clip((d - d_lo) / (d_hi - d_lo), 0.0, 1.0)
    d_obs = d * np.exp(frac * distance_rng.standard_normal(n_stars))
    catalog = Catalog.from_arrays(l, b, d_obs, observed, sigma, distance_err=frac * d_obs, inflate=False)
    return SimulatedSky(
        region,
        background,
        chosen,
        catalog,
        truth,
        seed,
        foreground,
        d,
        outlier,
        offset,
        d_obs * np.exp(-frac),
        d_obs * np.exp(frac),
    )


def paper_experiment(*, n_stars: int = 120_000, seed: int = 0) -> SimulatedSky:
    """The paper's Section 3 sky: l 50-90°, b -10..10°, d 180-500 pc on a 100 × 100 × 115 truth grid."""
    return simulate(
        Grid(l=(50, 90, 100), b=(-10, 10, 100), d=(180, 500, 115), ghost_cells=0), n_stars=n_stars, seed=seed
    )
