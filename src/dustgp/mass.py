"""Dust and gas masses from a 3D extinction map (paper Sect. 7, Eq. 9; docs: Method §7).

The dust column in front of a distance D follows from the extinction at 547 nm through the optical depth
:math:`\\tau = A \\ln 10 / 2.5`. Summing over the map's (l, b) pixels, the paper's Eq. 9 places all of it at
the single distance D:

.. math:: M_\\mathrm{dust} = \\frac{D^2}{\\kappa} \\sum_\\mathrm{pixels} \\tau(l, b)\\, \\Delta\\Omega(l, b)

with :math:`\\Delta\\Omega` the exact solid angle of a pixel (:meth:`dustgp.grid.Grid.solid_angles`) and
:math:`\\kappa = 26\\,000\\ \\mathrm{cm^2\\,g^{-1}}` the extinction cross-section per unit dust mass at 547 nm
(Draine 2003, ARA&A 41, 241: absorption 8.5e3 cm² g⁻¹ with albedo 0.67, so extinction
= 8.5e3 / (1 - 0.67) ≈ 2.6e4). The total (gas + dust) mass is 124 times the dust mass, the gas-to-dust ratio
the paper adopts (Sect. 7).

Because every pixel's dust is put at D, dust in front of D is given more mass than its true distance would
give (by (D / d)²): Eq. 9 is an upper-biased estimate for dust well in front of D, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import astropy.units as u
import numpy as np

from ._units import distance_pc
from .query import extinction_plane

if TYPE_CHECKING:
    from .posterior_map import PosteriorMap

__all__ = ["GAS_TO_DUST", "KAPPA_V", "MassEstimate", "dust_mass", "pixel_mask", "total_mass"]

#: Extinction cross-section per unit dust mass at 547 nm (Draine 2003): absorption 8.5e3 cm²/g, albedo 0.67.
KAPPA_V = 26_000.0 * u.cm**2 / u.g
#: Gas-to-dust mass ratio adopted by the paper (Dharmawardena et al. 2022, Sect. 7).
GAS_TO_DUST = 124.0
#: tau per magnitude of extinction: A = 2.5 log10(e) tau.
TAU_PER_MAG = np.log(10.0) / 2.5


@dataclass(frozen=True)
class MassEstimate:
    """A mass with its posterior spread.

    Attributes
    ----------
    percentiles : numpy.ndarray, shape (n_q,)
        Percentile levels, 0-100.
    mass : astropy.units.Quantity, shape (n_q,)
        Mass at each level, M_sun.
    method : {"samples", "percentiles"}
        ``"samples"``: percentiles of the masses of the joint posterior samples (exact for the stored
        samples).
        ``"percentiles"``: the mass of each stored extinction-percentile map (approximate: the sum over pixels
        of percentiles is not the percentile of the sum; it treats the pixels as fully correlated and so tends
        to overstate the spread).
    distance : astropy.units.Quantity
        The distance D of Eq. 9, pc.
    solid_angle : astropy.units.Quantity
        Solid angle summed over, sr.
    n_pixels : int
        Number of (l, b) pixels summed over.
    kappa : astropy.units.Quantity
        Extinction cross-section per unit dust mass, cm²/g.
    gas_to_dust : float or None
        The factor applied for a total (gas + dust) mass; None for a dust mass.
    """

    percentiles: np.ndarray
    mass: u.Quantity
    method: str
    distance: u.Quantity
    solid_angle: u.Quantity
    n_pixels: int
    kappa: u.Quantity
    gas_to_dust: float | None = None

    def at(self, q: float) -> u.Quantity:
        """The mass at percentile level ``q`` (one of :attr:`percentiles`), M_sun."""
        hit = np.flatnonzero(np.isclose(self.percentiles, q, rtol=0.0, atol=1e-9))
        if not hit.size:
            raise KeyError(f"percentile {q:g} not computed (have {self.percentiles.tolist()})")
        return self.mass[hit[0]]

    @property
    def median(self) -> u.Quantity:
        """The 50th-percentile mass, M_sun."""
        return self.at(50.0)

    def __repr__(self) -> str:
        kind = "total" if self.gas_to_dust else "dust"
        values = ", ".join(f"{q:g}%: {m:.4g}" for q, m in zip(self.percentiles, self.mass.value, strict=True))
        where = f"D={self.distance:.4g}, {self.n_pixels} px"
        return f"MassEstimate({kind}; {values} M_sun; {where}, {self.method})"


def _box(value: Any, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    lo, hi = (u.Quantity(v, u.deg).to_value(u.deg) for v in value)
    if name == "b" and hi < lo:
        raise ValueError(f"b: expected (lo, hi) with lo <= hi, got ({lo}, {hi})")
    return float(lo), float(hi)


def pixel_mask(dmap: PosteriorMap, l: Any = None, b: Any = None) -> np.ndarray:
    """The (b, l) pixels whose *centres* lie in a Galactic box (edges included).

    Parameters
    ----------
    dmap : PosteriorMap
    l, b : (lo, hi) of float or astropy.units.Quantity, optional
        Box in deg; ``None`` takes the whole axis. A longitude box with ``hi < lo`` (e.g. ``(350, 10)``)
        crosses l = 0.

    Returns
    -------
    numpy.ndarray of bool, shape (n_b, n_l)
    """
    grid = dmap.grid
    mask = np.ones((grid.n_b, grid.n_l), dtype=bool)
    l_box, b_box = _box(l, "l"), _box(b, "b")
    if l_box is not None:
        lo, hi = l_box
        width = hi - lo if 0.0 <= hi - lo <= 360.0 else (hi - lo) % 360.0
        offset = np.mod(grid.l_centers - lo, 360.0)  # longitude of each centre past the box's start
        mask &= (offset <= width)[None, :]
    if b_box is not None:
        mask &= ((grid.b_centers >= b_box[0]) & (grid.b_centers <= b_box[1]))[:, None]
    return mask


def dust_mass(
    dmap: PosteriorMap,
    *,
    l: Any = None,
    b: Any = None,
    distance: float | u.Quantity | None = None,
    kappa: u.Quantity | float = KAPPA_V,
    q: Sequence[float] = (16.0, 50.0, 84.0),
) -> MassEstimate:
    """Dust mass in front of ``distance`` over an (l, b) box, paper Eq. 9.

    .. math:: M_\\mathrm{dust} = \\frac{D^2}{\\kappa} \\sum_\\mathrm{pixels}
              \\frac{\\ln 10}{2.5} A(l, b; D)\\, \\Delta\\Omega(l, b)

    Parameters
    ----------
    dmap : PosteriorMap
    l, b : (lo, hi) of float or astropy.units.Quantity, optional
        Galactic box, deg; pixels whose centres lie inside (edges included) are summed whole. Default: the
        map.
    distance : float or astropy.units.Quantity, optional
        D, pc for a bare number: the extinction is taken to D (continuous in distance, as
        :meth:`dustgp.query.DustMapQuery.query`) and D is the distance of Eq. 9. Default ``d_max``.
    kappa : astropy.units.Quantity or float
        Extinction cross-section per unit dust mass, cm²/g for a bare number; default 26,000 cm²/g at 547 nm
        (Draine 2003).
    q : sequence of float
        Percentile levels of the returned spread, 0-100.

    Returns
    -------
    MassEstimate
        Masses in M_sun: percentiles over the joint posterior samples when the map keeps them (each sample
        integrated along its sightlines and summed over pixels first), else from the stored extinction
        percentiles (approximate, see :class:`MassEstimate`).
    """
    grid = dmap.grid
    d_pc = grid.d_max if distance is None else float(distance_pc(distance, "dust_mass: distance"))
    kappa_q = u.Quantity(kappa, u.cm**2 / u.g)
    levels = np.asarray(q, dtype=float)
    mask = pixel_mask(dmap, l, b)
    if not mask.any():
        raise ValueError(f"dust_mass: no pixel centre of the map lies in the box l={l}, b={b}")
    omega = grid.solid_angles()[mask]  # sr
    scale = ((d_pc * u.pc) ** 2 / kappa_q).to(u.M_sun)  # per unit (tau x sr)
    if dmap.n_samples:
        extinction = extinction_plane(dmap, d_pc * u.pc, mode="samples")[mask]  # (n_pix, n_samples)
        per_sample = TAU_PER_MAG * (extinction * omega[:, None]).sum(axis=0)
        values, method = np.percentile(per_sample, levels), "samples"
    else:
        extinction = extinction_plane(dmap, d_pc * u.pc, mode="percentile", pct=levels)[mask]  # (n_pix, n_q)
        values, method = TAU_PER_MAG * (extinction * omega[:, None]).sum(axis=0), "percentiles"
    return MassEstimate(
        percentiles=levels,
        mass=values * scale,
        method=method,
        distance=d_pc * u.pc,
        solid_angle=omega.sum() * u.sr,
        n_pixels=int(mask.sum()),
        kappa=kappa_q,
    )


def total_mass(
    dmap: PosteriorMap,
    *,
    l: Any = None,
    b: Any = None,
    distance: float | u.Quantity | None = None,
    kappa: u.Quantity | float = KAPPA_V,
    q: Sequence[float] = (16.0, 50.0, 84.0),
    gas_to_dust: float = GAS_TO_DUST,
) -> MassEstimate:
    """Total (gas + dust) mass: ``gas_to_dust`` × :func:`dust_mass` (124 in the paper, Sect. 7).

    Parameters are those of :func:`dust_mass`, plus ``gas_to_dust``, the gas-to-dust mass ratio.
    """
    dust = dust_mass(dmap, l=l, b=b, distance=distance, kappa=kappa, q=q)
    return MassEstimate(
        percentiles=dust.percentiles,
        mass=dust.mass * gas_to_dust,
        method=dust.method,
        distance=dust.distance,
        solid_angle=dust.solid_angle,
        n_pixels=dust.n_pixels,
        kappa=dust.kappa,
        gas_to_dust=float(gas_to_dust),
    )
