r"""From a truth to a catalogue: stars uniform in space, their noise-free extinction, and the observation model
(extinction noise with a floor, Gaia-like distance errors, outliers). See :mod:`dustgp.simulate` for the model's
equations and for the random streams each part draws from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from ..grid import Grid
from ..sightlines import Sightlines
from .structures import Structure, true_density

__all__ = ["DistanceErrorModel"]

DistanceErrorModel = Literal["log-uniform", "distance"]


def _draw_positions(region: Grid, rng: np.random.Generator, n_stars: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_stars`` positions (deg, deg, pc) uniform in l, in b (as in the paper) and in d³ over ``region``."""
    l = rng.uniform(region.l_edges[0], region.l_edges[-1], n_stars) % 360.0
    b = rng.uniform(region.b_edges[0], region.b_edges[-1], n_stars)
    d = np.cbrt(rng.uniform(region.d_min**3, region.d_max**3, n_stars))
    return l, b, d


def _star_extinction(
    region: Grid,
    background: float,
    structures: Sequence[Structure],
    foreground: bool,
    l: np.ndarray,
    b: np.ndarray,
    d: np.ndarray,
) -> np.ndarray:
    """Noise-free extinction (mag) to positions (deg, deg, pc) inside ``region`` (no ghost cells), integrated on
    ``region``'s cells with the model's partial-cell rule."""
    # one foreground cell 0 .. d_min in front of the truth grid carries the foreground dust
    with_front = region.with_ghost_cells(1)
    truth_grid = true_density(
        *with_front.cell_centers_lbd(),
        region=region,
        background=background,
        structures=structures,
        foreground=foreground,
    )
    return _truth_extinction(with_front, truth_grid, l, b, d)


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


def _draw_outliers(
    rng: np.random.Generator, n_stars: int, fraction: float, amplitude: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Which stars are outliers (exactly ``round(fraction × n_stars)``, chosen at random) and the extinction
    (mag) added to each, uniform in ``amplitude`` (0 for the others)."""
    outlier = np.zeros(n_stars, dtype=bool)
    offset = np.zeros(n_stars)
    if fraction > 0:
        chosen_stars = rng.choice(n_stars, size=round(fraction * n_stars), replace=False)
        outlier[chosen_stars] = True
        offset[chosen_stars] = rng.uniform(*amplitude, chosen_stars.size)
    return outlier, offset


def _scatter_distances(
    rng: np.random.Generator,
    d: np.ndarray,
    errors: tuple[float, float],
    model: DistanceErrorModel,
    d_range: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Catalogue distances (pc) scattered log-normally from the true ones ``d`` (pc), and each star's fractional
    1-sigma error: log-uniform in ``errors``, or growing log-linearly with distance across ``d_range`` (pc)."""
    f_lo, f_hi = errors
    d_lo, d_hi = d_range
    if model == "log-uniform":
        frac = np.exp(rng.uniform(np.log(f_lo), np.log(f_hi), d.size))
    else:
        frac = f_lo * (f_hi / f_lo) ** np.clip((d - d_lo) / (d_hi - d_lo), 0.0, 1.0)
    return d * np.exp(frac * rng.standard_normal(d.size)), frac
