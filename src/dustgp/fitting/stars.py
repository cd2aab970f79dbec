"""What a fit takes from its stars: their likelihood as configured, the distance range of each column, and the
per-star posterior predictive table (the inducing points' start: :mod:`dustgp.fitting.layout`)."""

from __future__ import annotations

import numpy as np
import torch
from astropy.table import Table

from ..catalog import Catalog
from ..grid import Grid
from ..likelihood import StarLikelihood, StarNodes
from ..sightlines import Sightlines
from .config import FitConfig, FitError

__all__ = ["star_checks", "star_distances", "star_likelihood"]


def star_distances(sightlines: Sightlines, distance: np.ndarray, grid: Grid) -> np.ndarray:
    """Nearest and farthest distance (pc) of the stars in each column of ``grid``, shape ``(2, n_b, n_l)``.

    NaN in columns without stars. ``distance`` is per star of ``sightlines``.
    """
    near = np.full(grid.n_columns, np.inf)
    far = np.full(grid.n_columns, -np.inf)
    np.minimum.at(near, sightlines.column, distance)
    np.maximum.at(far, sightlines.column, distance)
    out = np.stack([near, far])
    out[:, ~np.isfinite(near)] = np.nan
    return out.reshape(2, grid.n_b, grid.n_l)


def star_likelihood(
    catalog: Catalog, sightlines: Sightlines, config: FitConfig, *, dtype: torch.dtype, device: torch.device
) -> StarLikelihood:
    """The stars' likelihood as configured; ``catalog`` holds the stars of ``sightlines`` (those on the grid)."""
    treatment = config.distance_uncertainty
    has_errors = catalog.distance_err is not None and bool(np.any(catalog.distance_err > 0))
    if treatment == "auto":
        treatment = "quadrature" if has_errors else "none"
    if treatment in ("quadrature", "moment") and not has_errors:
        raise FitError(
            f"distance_uncertainty={treatment!r} needs distance uncertainties: the catalogue has no distance_err "
            "(give a distance_err column, 16th/84th-percentile distances or a parallax_err column, or use "
            "distance_uncertainty='none')"
        )
    if treatment == "moment" and config.method != "newton":
        raise FitError("distance_uncertainty='moment' updates sigma with the fit and needs method='newton'")
    if treatment == "inflate" and has_errors and not np.any(catalog.inflation > 0):
        catalog = catalog.inflate_for_distance()
    # the catalogue's inflated sigma only where asked: the other treatments see the distance errors themselves
    sigma = catalog.extinction_err if treatment == "inflate" else catalog.extinction_err_observed
    sigma = np.hypot(sigma, config.error_floor)
    n = len(catalog)
    if treatment == "quadrature":
        # the parallax posterior when the catalogue has parallaxes, else the log-normal one of distance ± distance_err
        posterior = catalog.distance_nodes(config.distance_nodes)
        nodes = StarNodes.build(sightlines.grid, catalog.l, catalog.b, *posterior)
    else:
        nodes = StarNodes(sightlines=sightlines, star=np.arange(n), log_prior=np.zeros(n), n_stars=n)
    likelihood = StarLikelihood(
        nodes,
        catalog.extinction,
        sigma,
        noise=config.likelihood,
        nu=config.nu,
        outlier_fraction=config.outlier_fraction,
        learn_outlier_fraction=config.learn_outlier_fraction and config.method == "newton",
        moment_distance_err=catalog.distance_err if treatment == "moment" else None,
        scatter=tuple(config.scatter),
        learn_scatter=config.learn_scatter,
        dtype=dtype,
        device=device,
    )
    likelihood.distance_treatment = treatment
    return likelihood


def star_checks(catalog: Catalog, likelihood: StarLikelihood, checks: dict[str, np.ndarray] | None) -> Table | None:
    """Per-star posterior predictive table: the catalogue row, the star and :meth:`StarLikelihood.predictive`."""
    if checks is None:
        return None
    table = Table(
        {
            "row_index": catalog.row_index,
            "l": catalog.l,
            "b": catalog.b,
            "distance": catalog.distance,
            "extinction": catalog.extinction,
            "extinction_err": np.sqrt(likelihood.sigma2.cpu().numpy()),
        }
    )
    for name, values in checks.items():
        table[name] = values
    units = {"l": "deg", "b": "deg", "distance": "pc", "extinction": "mag", "extinction_err": "mag"}
    units |= {"predicted": "mag", "predicted_sd": "mag"}
    for name, unit in units.items():
        table[name].unit = unit
    table.meta["description"] = "dustgp posterior predictive checks per star (see Fit.posterior_predictive)"
    return table
