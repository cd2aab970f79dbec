"""How good is a map: against a simulated truth, and against stars held out of the fit.

These are the accuracy figures the demo prints and the tests assert (METHOD.md §9): the relative density error
on the prediction grid, the share of cells whose truth lies inside the 16-84% band, the share of stars whose
predicted extinction falls below the truth by more than their sigma, and the reduced chi² of held-out stars.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .catalog import Catalog
from .dustmap import DustMap
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
    underestimated_fraction : float
        Share of stars whose predicted (median) extinction is below the true noise-free one by more than sigma.
    extinction_median_residual : float
        Median of (predicted - true) extinction to the stars, mag.
    """

    median_relative_error: float
    p90_relative_error: float
    max_relative_error: float
    coverage_16_84: float
    underestimated_fraction: float
    extinction_median_residual: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"density |rho/rho_true - 1|: median {self.median_relative_error:.2%}, "
            f"90th percentile {self.p90_relative_error:.2%}, max {self.max_relative_error:.2%}\n"
            f"truth inside the 16-84% band: {self.coverage_16_84:.1%} of cells\n"
            f"stars underestimated by more than 1 sigma: {self.underestimated_fraction:.2%}; "
            f"median extinction residual {self.extinction_median_residual:+.4f} mag"
        )


def compare_to_truth(dmap: DustMap, sky: SimulatedSky) -> TruthComparison:
    """Compare a map with the truth of the simulated sky it was fitted to."""
    region = dmap.region()
    truth = sky.density_on(dmap.grid)[region]
    median, lo, hi = (dmap.density(q).value[region] for q in (50, 16, 84))
    error = np.abs(median / truth - 1.0)
    cat = sky.catalog
    predicted = DustMapQuery(dmap).query_lbd(cat.l, cat.b, cat.distance, mode="median")
    ok = np.isfinite(predicted)
    under = predicted[ok] < sky.true_extinction[ok] - cat.extinction_err[ok]
    return TruthComparison(
        median_relative_error=float(np.median(error)),
        p90_relative_error=float(np.quantile(error, 0.9)),
        max_relative_error=float(error.max()),
        coverage_16_84=float(np.mean((truth >= lo) & (truth <= hi))),
        underestimated_fraction=float(np.mean(under)),
        extinction_median_residual=float(np.median(predicted[ok] - sky.true_extinction[ok])),
    )


@dataclass(frozen=True)
class HoldoutReport:
    """Held-out stars against the map's predicted extinction.

    Attributes
    ----------
    n_stars : int
        Held-out stars inside the map.
    reduced_chi2 : float
        ``mean((A_obs - A_pred)² / (sigma_obs² + sigma_pred²))`` with A_pred, sigma_pred the posterior mean and
        standard deviation of the extinction to each star.
    median_residual : float
        Median of A_obs - A_pred, mag.
    """

    n_stars: int
    reduced_chi2: float
    median_residual: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.n_stars} held-out stars: reduced chi2 {self.reduced_chi2:.3f}, "
            f"median residual {self.median_residual:+.4f} mag"
        )


def holdout_report(dmap: DustMap, held_out: Catalog) -> HoldoutReport:
    """Reduced chi² of stars that were not used in the fit."""
    query = DustMapQuery(dmap)
    mean = query.query_lbd(held_out.l, held_out.b, held_out.distance, mode="mean")
    std = query.query_lbd(held_out.l, held_out.b, held_out.distance, mode="std")
    ok = np.isfinite(mean)
    residual = held_out.extinction[ok] - mean[ok]
    chi2 = residual**2 / (held_out.extinction_err[ok] ** 2 + std[ok] ** 2)
    return HoldoutReport(
        n_stars=int(ok.sum()),
        reduced_chi2=float(np.mean(chi2)) if ok.any() else float("nan"),
        median_residual=float(np.median(residual)) if ok.any() else float("nan"),
    )
