"""How good is a map: against a simulated truth, and against stars held out of the fit.

These are the accuracy figures the demo prints and the tests assert (docs: Method §9): the relative density error
on the prediction grid, the share of cells whose truth lies inside the 16-84% band, the share of stars whose
predicted extinction falls below the truth by more than their sigma, and the reduced chi² of held-out stars.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import astropy.units as u
import numpy as np
from scipy import special, stats

from .catalog import Catalog
from .posterior_map import PosteriorMap
from .query import DustMapQuery
from .simulate import SimulatedSky

__all__ = ["HoldoutReport", "TruthComparison", "compare_to_truth", "holdout_report"]


@dataclass(frozen=True)
class TruthComparison:
    """Accuracy of a map against a simulated truth (region cells only; ghost cells excluded).

    Attributes
    ----------
    median_relative_error, p90_relative_error, max_relative_error : float
        Percentiles of ``|rho_median / rho_true - 1|`` over the prediction grid's region cells.
    coverage_16_84 : float
        Share of cells whose true density lies inside the posterior 16-84% band (0.68 if calibrated).
    extinction_coverage_16_84 : float
        Share of cells whose true extinction to the cell's far edge lies inside the map's 16-84% extinction band.
    underestimated_fraction : float
        Share of stars whose predicted (median) extinction is below the true noise-free one by more than sigma.
    extinction_median_residual : float
        Median of (predicted - true) extinction to the stars, mag.
    volume_coverage_16_84, volume_extinction_coverage_16_84 : float
        The two coverages with each cell weighted by its volume (:meth:`dustgp.grid.Grid.cell_volumes`): the
        share of random points, uniform in the volume, whose truth lies inside the band. Cells regular in (l, b,
        d) are smallest near the Sun, so the plain share of cells gives the nearest distances the most weight.
    """

    median_relative_error: float
    p90_relative_error: float
    max_relative_error: float
    coverage_16_84: float
    underestimated_fraction: float
    extinction_median_residual: float
    extinction_coverage_16_84: float = float("nan")
    volume_coverage_16_84: float = float("nan")
    volume_extinction_coverage_16_84: float = float("nan")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"density |rho/rho_true - 1|: median {self.median_relative_error:.2%}, "
            f"90th percentile {self.p90_relative_error:.2%}, max {self.max_relative_error:.2%}\n"
            f"truth inside the 16-84% band: {self.coverage_16_84:.1%} of cells (density), "
            f"{self.extinction_coverage_16_84:.1%} (extinction); of the volume: {self.volume_coverage_16_84:.1%}, "
            f"{self.volume_extinction_coverage_16_84:.1%}\n"
            f"stars underestimated by more than 1 sigma: {self.underestimated_fraction:.2%}; "
            f"median extinction residual {self.extinction_median_residual:+.4f} mag"
        )


def compare_to_truth(dmap: PosteriorMap, sky: SimulatedSky) -> TruthComparison:
    """Compare a map with the truth of the simulated sky it was fitted to."""
    region = dmap.region_slice
    truth = sky.density_on(dmap.grid)[region]
    median, lo, hi = (dmap.density(q).value[region] for q in (50, 16, 84))
    error = np.abs(median / truth - 1.0)
    true_extinction = sky.extinction_on(dmap.grid)[region]
    a_lo, a_hi = (dmap.extinction(q).value[region] for q in (16, 84))
    cat = sky.catalog
    # at the stars' true distances: with distance errors, the catalogue's are scattered from where A_true is
    predicted = DustMapQuery(dmap).query_lbd(cat.l, cat.b, sky.true_distance * u.pc, mode="median")
    ok = np.isfinite(predicted)
    under = predicted[ok] < sky.true_extinction[ok] - cat.extinction_err[ok]
    inside = (truth >= lo) & (truth <= hi)
    inside_extinction = (true_extinction >= a_lo) & (true_extinction <= a_hi)
    volume = dmap.grid.cell_volumes()[region]
    volume = volume / volume.sum()
    return TruthComparison(
        median_relative_error=float(np.median(error)),
        p90_relative_error=float(np.quantile(error, 0.9)),
        max_relative_error=float(error.max()),
        coverage_16_84=float(np.mean(inside)),
        underestimated_fraction=float(np.mean(under)),
        extinction_median_residual=float(np.median(predicted[ok] - sky.true_extinction[ok])),
        extinction_coverage_16_84=float(np.mean(inside_extinction)),
        volume_coverage_16_84=float(np.sum(volume * inside)),
        volume_extinction_coverage_16_84=float(np.sum(volume * inside_extinction)),
    )


@dataclass(frozen=True)
class HoldoutReport:
    """Held-out stars against the map's posterior predictive extinction.

    The predictive distribution of a held-out star's observed extinction averages the map over the star's
    distance posterior (:meth:`dustgp.catalog.Catalog.distance_nodes`: from the parallax when the catalogue has
    one, else log-normal, when the catalogue gives distance uncertainties)
    and adds its quoted uncertainty: mean ``E_d[E A(d)]``, variance
    ``σ_obs² + floor² + E_d[Var A(d)] + Var_d[E A(d)]``, plus the fit's model scatter ``τ² + f² E_d[(E A(d))²]``
    when it has one (:mod:`dustgp.likelihood`).

    Those two moments give ``reduced_chi2`` and ``inside_16_84``: the Gaussian part of the predictive. The whole
    predictive is the fit's noise model averaged over the distance nodes, ``F(A) = Σ_k π_k F_k(A)``, each node's
    CDF ``F_k`` a Gaussian (or the Student-t of the fit) centred on ``E A(d_k)`` with node variance ``σ_obs² +
    floor² + Var A(d_k) + τ² + f² (E A(d_k))²``, and for a mixture ``(1 - ε) F(A) + ε U(A)`` with U the outlier
    population's CDF, flat over the fitted catalogue's extinction range. Its probability integral transform
    ``PIT = F(A_obs)`` is uniform for a calibrated model, so the normal scores ``z = Φ⁻¹(PIT)`` are N(0, 1) whatever
    the noise model (Gneiting, Balabdaoui & Raftery 2007): ``predictive_reduced_chi2`` is ``mean(z²)`` and
    ``predictive_inside_16_84`` the share with PIT in (0.16, 0.84). Under a mixture they count an outlier as
    what the model says it is, an unlikely draw of the outlier population, not a 10-sigma miss of the map.

    Attributes
    ----------
    n_stars : int
        Held-out stars inside the map.
    reduced_chi2 : float
        ``mean((A_obs - A_pred)² / s²)`` with A_pred and s² the predictive mean and variance (1 if calibrated).
    median_residual : float
        Median of A_obs - A_pred, mag.
    inside_16_84 : float
        Share of held-out stars within one predictive standard deviation (0.68 if calibrated and Gaussian).
    distance_nodes : int
        Distance nodes per star (1: at the catalogue distance, its inflated uncertainty used instead).
    flagged : int
        Held-out stars whose outlier probability under the fit's mixture exceeds one half (0 without a mixture).
    reduced_chi2_unflagged, inside_16_84_unflagged : float
        The same two figures over the stars not flagged: what the Gaussian part of a mixture predictive claims.
    predictive_reduced_chi2, predictive_inside_16_84 : float
        ``mean(z²)`` and the share with PIT in (0.16, 0.84) under the whole predictive (1 and 0.68 if calibrated).
    """

    n_stars: int
    reduced_chi2: float
    median_residual: float
    inside_16_84: float = float("nan")
    distance_nodes: int = 1
    flagged: int = 0
    reduced_chi2_unflagged: float = float("nan")
    inside_16_84_unflagged: float = float("nan")
    predictive_reduced_chi2: float = float("nan")
    predictive_inside_16_84: float = float("nan")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        text = (
            f"{self.n_stars} held-out stars: reduced chi2 {self.reduced_chi2:.3f}, "
            f"{self.inside_16_84:.1%} inside their predictive 16-84% interval, "
            f"median residual {self.median_residual:+.4f} mag"
        )
        if np.isfinite(self.predictive_reduced_chi2):
            text += (
                f"; under the whole predictive: reduced chi2 {self.predictive_reduced_chi2:.3f}, "
                f"{self.predictive_inside_16_84:.1%} inside"
            )
        if self.flagged:
            text += (
                f"; {self.flagged} flagged as outliers, the others: reduced chi2 {self.reduced_chi2_unflagged:.3f}, "
                f"{self.inside_16_84_unflagged:.1%} inside"
            )
        return text


def holdout_report(
    dmap: PosteriorMap,
    held_out: Catalog,
    *,
    distance_nodes: int = 16,
    error_floor: float = 0.0,
    scatter: tuple[float, float] = (0.0, 0.0),
    outliers: tuple[float, float, float] | None = None,
    nu: float | None = None,
) -> HoldoutReport:
    """Posterior predictive check of stars that were not used in the fit (see :class:`HoldoutReport`).

    Parameters
    ----------
    dmap : PosteriorMap
    held_out : Catalog
    distance_nodes : int
        Nodes of each star's distance posterior, when the catalogue gives distance uncertainties.
    error_floor : float
        Added in quadrature to the quoted extinction uncertainties, mag (the fit's ``error_floor``).
    scatter : tuple of float
        The fit's model scatter ``(τ, f)`` (:attr:`dustgp.fitting.Fit.scatter`): ``τ² + f² E[A(d)²]`` joins the
        predictive variance.
    outliers : tuple of float, optional
        The fit's mixture ``(ε, low, high)`` (:attr:`dustgp.fitting.Fit.outliers`): outlier fraction and the
        extinction range (mag) the outliers are flat over. A held-out star's outlier probability is
        ``ε U / (ε U + (1 - ε) N(A_obs; A_pred, s²))``, ``U = 1 / (high - low)``.
    nu : float, optional
        Degrees of freedom of the fit's Student-t noise model; None for a Gaussian (or mixture) one.
    """
    query = DustMapQuery(dmap)
    n = len(held_out)
    marginalise = held_out.distance_err is not None and bool(np.any(held_out.distance_err > 0))
    if marginalise:
        nodes, _ = held_out.distance_nodes(distance_nodes)
        sigma = held_out.extinction_err_observed
    else:
        nodes, sigma = held_out.distance[:, None], held_out.extinction_err
    k = nodes.shape[1]
    where = (np.repeat(held_out.l, k), np.repeat(held_out.b, k), nodes.reshape(-1) * u.pc)
    mean_k = query.query_lbd(*where, mode="mean").reshape(n, k)
    std_k = query.query_lbd(*where, mode="std").reshape(n, k)
    inside_map = np.isfinite(mean_k)
    ok = inside_map.any(axis=1)
    count = inside_map.sum(axis=1).clip(min=1)
    mean_k, std_k = np.where(inside_map, mean_k, 0.0), np.where(inside_map, std_k, 0.0)
    mean = mean_k.sum(axis=1) / count
    floor, fraction = scatter
    base = sigma**2 + error_floor**2 + floor**2
    node_variance = base[:, None] + fraction**2 * mean_k**2 + std_k**2
    # the moments of the node average: E_d of each node's variance and second moment
    second = np.sum(inside_map * (node_variance + mean_k**2), axis=1) / count
    variance = np.clip(second - mean**2, 1e-300, None)
    residual = held_out.extinction[ok] - mean[ok]
    chi2 = residual**2 / variance[ok]
    # the whole predictive's CDF at the observation, node by node
    z_k = (held_out.extinction[:, None] - mean_k) / np.sqrt(node_variance)
    cdf_k = stats.t.cdf(z_k, df=nu) if nu is not None else special.ndtr(z_k)
    pit = np.sum(inside_map * cdf_k, axis=1) / count
    inlier = np.ones(chi2.shape, dtype=bool)
    if outliers is not None:
        fraction_out, low, high = outliers
        gaussian = (1.0 - fraction_out) * np.exp(-0.5 * chi2) / np.sqrt(2.0 * np.pi * variance[ok])
        inlier = fraction_out / (high - low) <= gaussian  # outlier probability <= 1/2
        uniform = np.clip((held_out.extinction - low) / (high - low), 0.0, 1.0)
        pit = (1.0 - fraction_out) * pit + fraction_out * uniform
    pit = pit[ok]
    score = special.ndtri(np.clip(pit, 1e-12, 1.0 - 1e-12))
    return HoldoutReport(
        n_stars=int(ok.sum()),
        reduced_chi2=float(np.mean(chi2)) if ok.any() else float("nan"),
        median_residual=float(np.median(residual)) if ok.any() else float("nan"),
        inside_16_84=float(np.mean(chi2 < 1.0)) if ok.any() else float("nan"),
        distance_nodes=k,
        flagged=int(np.sum(~inlier)),
        reduced_chi2_unflagged=float(np.mean(chi2[inlier])) if inlier.any() else float("nan"),
        inside_16_84_unflagged=float(np.mean(chi2[inlier] < 1.0)) if inlier.any() else float("nan"),
        predictive_reduced_chi2=float(np.mean(score**2)) if ok.any() else float("nan"),
        predictive_inside_16_84=float(np.mean((pit > 0.16) & (pit < 0.84))) if ok.any() else float("nan"),
    )
