"""The :class:`Fit` record: a trained model and how it got there, and its checkpoint fields (save, :func:`load_fit`)."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from astropy.table import Table
from scipy import stats as scipy_stats

from .._version import __version__
from ..grid import Grid
from ..likelihood import StarLikelihood
from ..model import DustGP
from ..prediction import predict
from .checkpoint import CHECKPOINT_FORMAT, load_checkpoint, model_from_state, write_checkpoint
from .config import FitConfig
from .stopping import CONVERGED

__all__ = ["WIDE_PRIOR", "Fit", "checkpoint_payload", "load_fit"]

#: Largest prior variance of log10 density (alpha, dex²) a fit may learn before it warns. Supersonic turbulence
#: spreads ln(rho) by sigma_s² = ln(1 + b² Mach²) (Federrath, Klessen & Schmidt 2008, ApJ 688, L79): at Mach 30
#: with fully compressive driving (b = 1), 1.3 dex², the widest log-normal density of the interstellar gas. A
#: prior wider than 2 dex² (1.4 dex at 1 sigma) no longer describes how dense dust is: the fit has widened it to
#: hold density far below what the stars can see (an empty foreground in ghost cells, or a low background it
#: cannot tell from a lower one), and there the map's density and its band say little (docs: Design notes,
#: "Where the bands miss").
WIDE_PRIOR = 2.0


@dataclass(eq=False)
class Fit:
    """A trained model and how it got there. Returned by :func:`fit`; :meth:`predict` makes a map.

    Attributes
    ----------
    model : DustGP
    grid : Grid
        Training grid.
    config : FitConfig
    losses : numpy.ndarray
        Negative ELBO (nats) at each iteration (of J, the ELBO with the stars' missing information counted, when
        ``config.missing_information == "objective"``).
    map_changes : numpy.ndarray, shape (n_checks, 2)
        (iteration, q90 relative change of the mean map over the window) at each check of the map rule.
    iterations : int
    stopped_by : str
        ``"converged"`` (second-order method), ``"map converged"`` (SVI), ``"elbo rule"``, ``"max_iterations"``,
        ``"interrupted"`` (Ctrl-C) or ``"terminated"`` (SIGTERM).
    seconds : float
        Wall-clock training time (this session and any resumed ones).
    stars : dict
        Counts of stars used, off the grid and in the ghost cells.
    converged : bool
        Whether the stop rule was met (``stopped_by`` says which); False for a fit that ran out of iterations
        or was interrupted, whose map may still change.
    data_fingerprint : str
        :func:`data_fingerprint` of the stars and grid fitted (checked when a checkpoint is resumed).
    learned : bool
        False when neither the hyperparameters nor the mean of q(v) moved from their initial values in any
        iteration: the map is the prior's, whatever ``stopped_by`` says (a warning says so too).
    star_distances : numpy.ndarray or None, shape (2, n_b, n_l)
        Distance of the nearest and of the farthest star used in each column of the training grid, pc; NaN in
        columns without stars. Prediction marks cells beyond the farthest star, or in columns without stars, as
        not constrained by the data (:func:`dustgp.prediction.constrained_cells`). None for checkpoints written
        before it was recorded.
    likelihood : StarLikelihood or None
        The stars' likelihood as fitted (its learned outlier fraction, latent posteriors); None when loaded.
    star_checks : astropy.table.Table or None
        Posterior predictive checks per star used (:meth:`posterior_predictive`); None when loaded from a
        checkpoint.
    foreground : dict
        :class:`~dustgp.fitting.foreground.ForegroundCheck` of the stars behind ``d_min`` (``foreground="auto"``;
        ``empty`` True: ``grid`` is the given one without its ghost cells); empty when not checked or loaded.
    """

    model: DustGP
    grid: Grid
    config: FitConfig
    losses: np.ndarray
    map_changes: np.ndarray
    iterations: int
    stopped_by: str
    seconds: float
    stars: dict[str, int] = field(default_factory=dict)
    converged: bool = False
    data_fingerprint: str = ""
    learned: bool = True
    star_distances: np.ndarray | None = None
    likelihood: StarLikelihood | None = field(default=None, repr=False)
    star_checks: Table | None = field(default=None, repr=False)
    foreground: dict[str, Any] = field(default_factory=dict)

    def posterior_predictive(self) -> dict[str, Any]:
        """Summary of the posterior predictive checks: are the stars' extinctions what the fitted map predicts?

        ``inside_16_84`` is the share of stars whose observation lies inside its predictive 16-84% interval (0.68
        for a calibrated model); ``residual_quantiles`` the 16/50/84th percentiles of the normalised residuals
        ``Φ⁻¹(PIT)`` (-1, 0, 1 when calibrated) and ``ks_statistic`` their Kolmogorov-Smirnov distance to N(0, 1);
        ``flagged`` counts the stars flagged as outliers (outlier probability > 0.5 in the mixture, ``|residual|`` > 3
        otherwise); ``outlier_fraction`` is the mixture's fitted ε, ``scatter`` the model scatter ``[τ (mag), f]``
        (learned with ``learn_scatter``).
        """
        if self.star_checks is None:
            return {}
        table = self.star_checks
        pit = np.asarray(table["pit"], dtype=float)
        ok = np.isfinite(pit)
        residual = np.asarray(table["normalised_residual"], dtype=float)[ok]
        like = self.likelihood
        return {
            "likelihood": self.config.likelihood,
            "distance_uncertainty": like.distance_treatment if like is not None else self.config.distance_uncertainty,
            "n_stars": int(ok.sum()),
            "inside_16_84": float(np.mean((pit[ok] > 0.16) & (pit[ok] < 0.84))) if ok.any() else float("nan"),
            "residual_quantiles": np.percentile(residual, [16, 50, 84]).tolist() if ok.any() else [],
            "ks_statistic": float(scipy_stats.kstest(residual, "norm").statistic) if ok.any() else float("nan"),
            "flagged": int(np.sum(table["flagged"])),
            "outlier_fraction": like.outlier_fraction if like is not None and like.noise == "mixture" else None,
            "scatter": list(self.scatter),
        }

    @property
    def scatter(self) -> tuple[float, float]:
        """The model scatter ``(τ, f)`` of the likelihood (mag, fraction; learned with ``learn_scatter``)."""
        source = self.likelihood if self.likelihood is not None else self.config
        return float(source.scatter[0]), float(source.scatter[1])

    @property
    def outliers(self) -> tuple[float, float, float] | None:
        """The mixture's outlier fraction ε and the range (mag) its outliers are flat over, or None without one."""
        like = self.likelihood
        if like is None or like.noise != "mixture":
            return None
        return like.outlier_fraction, *like.outlier_range

    def hyperparameters(self) -> dict[str, float | list[float]]:
        """The five hyperparameters in physical units (see :meth:`DustGP.hyperparameters`)."""
        return self.model.hyperparameters()

    @property
    def prior_warning(self) -> str | None:
        """Why the learned prior cannot be trusted between the structures, or None when it can.

        Set when the fit learned a prior variance of log density ``alpha`` above :data:`WIDE_PRIOR`. The map
        then still fits the stars, but where they do not pin the density (a low background, gaps between the
        structures, an empty foreground) it may be orders of magnitude off and its 16-84% band too narrow.
        """
        h = self.hyperparameters()
        alpha = float(h["scale_dex2"])
        if not self.config.learn_hyperparameters or alpha <= WIDE_PRIOR:
            return None
        return (
            f"the fit widened the prior of log density to {math.sqrt(alpha):.2g} dex at 1 sigma (alpha = "
            f"{alpha:.3g} dex², mean 10^{h['mean_log10_density']:.2f} mag/pc), beyond the spread of any turbulent "
            f"gas (~1.1 dex): where the stars do not pin the density (a low background, gaps between structures, an "
            f"empty foreground) the map may be orders of magnitude off and its band too narrow"
        )

    @property
    def elbo(self) -> np.ndarray:
        return -self.losses

    def predict(self, grid: Grid | None = None, **options: Any):
        """Posterior map on ``grid`` (default: the training grid refined 2.5×); see :func:`dustgp.predict`."""
        return predict(self, grid, **options)

    def save(self, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """Write the fit as a checkpoint (weights only, loadable without executing code)."""
        return write_checkpoint(path, checkpoint_payload(self, None, None), overwrite=overwrite)

    def summary(self) -> str:
        h = self.hyperparameters()
        gx, gy, gz = h["length_scale_pc"]
        warning = self.prior_warning
        return "\n".join(
            [
                f"stars used {self.stars.get('used', 0)}, off grid {self.stars.get('off_grid', 0)}, "
                f"in ghost cells {self.stars.get('in_ghost_cells', 0)}"
                + ("; foreground empty: trained without ghost cells" if self.foreground.get("empty") else ""),
                f"{self.iterations} {self.config.method} iterations in {self.seconds:.1f} s, stopped by "
                f"{self.stopped_by} ({'converged' if self.converged else 'NOT converged'}"
                f"{'' if self.learned else '; LEARNED NOTHING: hyperparameters and q(v) at their initial values'}); "
                f"final -ELBO {self.losses[-1]:.6g}"
                if self.losses.size
                else "no iterations",
                f"length scales {gx:.1f}, {gy:.1f}, {gz:.1f} pc; scale {h['scale_dex']:.3f} dex; "
                f"mean density 10^{h['mean_log10_density']:.3f} mag/pc",
                *([f"WARNING: {warning}"] if warning else []),
            ]
        )


def _likelihood_state(result: Fit) -> dict[str, Any]:
    """The noise model's learned parameters, and those its last latent update started from (for a resume)."""
    source = result.likelihood or result.config
    state: dict[str, Any] = {"outlier_fraction": source.outlier_fraction, "scatter": list(source.scatter)}
    if result.likelihood is not None:
        fraction, scatter = result.likelihood.update_start
        state["update_start"] = {"outlier_fraction": fraction, "scatter": list(scatter)}
    return state


def checkpoint_payload(
    result: Fit, optimizer_state: dict[str, Any] | None, rng_state: torch.Tensor | None
) -> dict[str, Any]:
    """The checkpoint of ``result``: with the optimiser's state and torch's CPU random state when a fit writes it
    to be resumed (``None``: empty, and the current random state)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "dustgp_version": __version__,
        "model": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
        "optimizer": optimizer_state if optimizer_state is not None else {},
        "rng": rng_state if rng_state is not None else torch.get_rng_state(),
        "config": result.config.to_dict(),
        "grid": result.grid.to_dict(),
        "losses": torch.as_tensor(result.losses, dtype=torch.float64),
        "map_changes": torch.as_tensor(result.map_changes, dtype=torch.float64).reshape(-1, 2),
        "iterations": result.iterations,
        "stopped_by": result.stopped_by,
        "converged": result.converged,
        "seconds": result.seconds,
        "stars": dict(result.stars),
        "data_fingerprint": result.data_fingerprint,
        "likelihood": _likelihood_state(result),
        "learned": result.learned,
        "star_distances": (
            None if result.star_distances is None else torch.as_tensor(result.star_distances, dtype=torch.float64)
        ),
    }


def load_fit(path: str | os.PathLike, *, device: str | None = None) -> Fit:
    """A :class:`Fit` from a checkpoint, ready to :meth:`~Fit.predict` (or to resume with ``fit(resume=...)``)."""
    payload = load_checkpoint(path)
    config = FitConfig.from_dict(payload["config"])
    if device is not None:
        config = dataclasses.replace(config, device=device)
    gp = model_from_state(payload["model"], config).to(config.device)
    gp.eval()
    return Fit(
        model=gp,
        grid=Grid.from_dict(payload["grid"]),
        config=config,
        losses=payload["losses"].numpy(),
        map_changes=payload["map_changes"].numpy(),
        iterations=int(payload["iterations"]),
        stopped_by=str(payload["stopped_by"]),
        seconds=float(payload["seconds"]),
        stars={k: int(v) for k, v in payload["stars"].items()},
        converged=bool(payload.get("converged", payload["stopped_by"] in CONVERGED)),
        data_fingerprint=str(payload.get("data_fingerprint", "")),
        learned=bool(payload.get("learned", True)),
        star_distances=None if payload.get("star_distances") is None else payload["star_distances"].numpy(),
    )
