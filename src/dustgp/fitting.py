"""Training: maximise the ELBO over the variational posterior, the inducing points and the five hyperparameters.

Two methods share the data preparation, the model, checkpoints, progress and Ctrl-C/SIGTERM handling here. The
default, ``method="newton"``, maximises the ELBO in closed form with second-order steps (:mod:`dustgp.newton`). The
paper's own scheme, ``method="svi"``, is described below.

With ``method="svi"`` the ELBO (docs: Method §5, paper Eqs. 3-5) is estimated with Pyro's ``TraceMeanField_ELBO``:
32 Monte Carlo draws of the whitened inducing values, vectorised in one batch, each projected jointly onto the
training cells (:mod:`dustgp.model`), and the KL term in closed form. The likelihood of all stars enters through
the sufficient statistics of :class:`~dustgp.sightlines.GaussianStatistics`, so an iteration costs the same for
10⁴ or 10⁶ stars.

Stopping. The paper stops when the ELBO varies by less than 1% over 10 iterations (``stop="elbo"``). On the
Section 3 problem that fires after ~120 iterations while the map keeps improving for 1000+ (docs: Design notes), so
the default (``stop="map"``) watches the map itself: every ``check_every`` iterations it evaluates the posterior
mean density on the training cells and stops once the 90th percentile of ``|rho_now / rho_then - 1|`` over the
last ``window`` iterations has stayed below ``tol`` for ``patience`` checks in a row. With constant learning
rates that change levels off at the Monte Carlo noise (a few per cent) while the map still improves; how the
errors at which each ``tol`` fires were measured is in the docs (Design notes, "Stopping").

AdamW: weight decay pulls parameters toward zero; on the inducing locations that means toward the Sun, so decay
applies to the variational parameters only (and is 0 by default).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
import zipfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions as pdist
import torch
from astropy.table import Table
from pyro.infer import SVI, TraceMeanField_ELBO
from scipy import stats as scipy_stats
from torch.distributions.kl import register_kl
from tqdm.auto import tqdm

from . import newton
from ._atomic import atomic_path
from ._version import __version__
from .catalog import Catalog
from .distances import lognormal_nodes
from .grid import Grid, lbd_to_xyz
from .kernels import Workspace
from .likelihood import DISTANCE_TREATMENTS, NOISE_MODELS, StarLikelihood, StarNodes
from .model import DustGP
from .prediction import predict
from .sightlines import GaussianStatistics, Sightlines

__all__ = ["Fit", "FitConfig", "FitError", "fit", "load_fit"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "dustgp-checkpoint-1"
STOP_RULES = ("map", "elbo", "none")
METHODS = ("newton", "svi")
#: Outer steps of the second-order method, iterations of SVI.
DEFAULT_MAX_ITERATIONS = {"newton": 200, "svi": 3000}


class FitError(RuntimeError):
    """A fit that cannot start or go on (no stars on the grid, an incompatible checkpoint, ...)."""


@dataclass
class FitConfig:
    """Every knob of a fit, with the units it is given in. Saved with checkpoints and maps.

    Parameters
    ----------
    method : {"newton", "svi"}
        How the ELBO is maximised. ``"newton"`` (default): the exact ELBO (closed-form expectation, the
        conditional covariance K_xx - Q_xx included) maximised by natural-gradient steps on q(v) and L-BFGS steps
        on the hyperparameters and inducing locations, each step raising the ELBO (:mod:`dustgp.newton`);
        float64. ``"svi"``: the paper's scheme, Pyro SVI with Monte Carlo gradients and AdamW.
    inducing_points : int
        Number M of inducing points.
    length_scale : float or list of 3 floats
        Initial kernel scale lengths (gamma_x, gamma_y, gamma_z), pc.
    scale : float
        Initial kernel scale factor alpha, dex² (prior variance of phi).
    mean : float or None
        Initial constant mean c, log10(mag/pc); ``None`` takes log10 of the median of ``A_i / d_i``.
    learn_inducing_locations : bool
        Train the inducing locations, or keep them at their initial star positions.
    learn_hyperparameters : bool
        ``"newton"`` only: train c, alpha, gamma (and the locations), or hold them at their initial values and
        fit q(v) alone.
    particles : int
        Monte Carlo samples per ELBO estimate.
    lr : float
        AdamW learning rate.
    lr_covariance : float
        AdamW learning rate of the variational covariance factor L_q (see Notes).
    lr_decay, lr_decay_iterations : float, int
        Learning rates shrink geometrically to ``lr_decay`` times their start over ``lr_decay_iterations``
        iterations, then stay there: Monte Carlo noise in the gradients otherwise keeps the map jittering.
    initial_posterior_std : float
        Initial L_q = ``initial_posterior_std`` · I in the whitened space (GPyTorch starts at 1, see Notes).
    weight_decay : float
        AdamW decoupled weight decay on the variational parameters (never on locations or hyperparameters).
    max_iterations : int, optional
        Upper bound on iterations (SVI, default 3000) or outer steps (newton, default 200).
    stop : {"map", "elbo", "none"}
        Stop rule: the map has converged (default); the paper's ELBO rule; or run ``max_iterations``.
    tol, window, check_every, patience : float, int, int, int
        Map rule: stop when q90 ``|rho_now/rho_{window iterations ago} - 1|`` < ``tol`` at ``patience`` checks in a row.
    elbo_tol, elbo_window : float, int
        Paper's rule: stop when ``(max - min) / |mean|`` of the last ``elbo_window`` ELBO values < ``elbo_tol``.
    min_iterations : int
        No stop rule fires before this many iterations (SVI).
    step_tol : float
        ``"newton"`` stop rule: q90 over the training cells of the relative change of the median density, and of
        the posterior spread of phi (5 × ``step_tol``), per step, at ``patience`` steps in a row.
    warmup : int
        ``"newton"``: steps of q alone before the hyperparameters move.
    likelihood : {"mixture", "student-t", "gaussian"}
        Noise model of the stars' extinctions (:mod:`dustgp.likelihood`): a Gaussian plus an outlier population
        of learned fraction (default; each star's outlier probability is reported after the fit), a Student-t of
        ``nu`` degrees of freedom, or the paper's Gaussian.
    nu : float
        Degrees of freedom of the Student-t.
    outlier_fraction : float
        Outlier fraction ε of the mixture: its starting value, or its value when not learned.
    learn_outlier_fraction : bool
        ``"newton"``: learn ε (an EM update per step). SVI keeps it fixed.
    distance_uncertainty : {"auto", "quadrature", "moment", "inflate", "none"}
        How the catalogue's distance uncertainties enter: averaged over each star's log-normal distance
        posterior on ``distance_nodes`` quadrature nodes (``"quadrature"``); one node with the model's own slope
        added to the variance (``"moment"``, newton only); the catalogue's neighbour-based inflation of sigma_A
        (``"inflate"``); or ignored (``"none"``). ``"auto"``: quadrature when the catalogue has distance
        uncertainties, otherwise none.
    distance_nodes : int
        Quadrature nodes K per star.
    error_floor : float
        Added in quadrature to every extinction uncertainty, mag: ``sqrt(sigma² + floor²)``. No photometric
        extinction is known to better than ~0.01 mag (calibration and extinction-law systematics), and a star
        quoted at 1e-4 mag otherwise pins its neighbourhood and stiffens the fit.
    dtype : {"float32", "float64"}
    device : str
        Torch device, e.g. ``"cpu"`` or ``"cuda"``.
    seed : int
        Seeds the inducing-point draw and the Monte Carlo samples.
    checkpoint_every : int
        Iterations between checkpoints (when a checkpoint path is given).

    Notes
    -----
    The variational covariance factor L_q has M(M+1)/2 entries. Adam moves each by about ``lr`` per step whatever
    the size of its gradient, so noisy Monte Carlo gradients inflate every row of L_q by ~``lr``·√M per step and
    the posterior variance of phi explodes (measured on the Section 3 problem: -ELBO from 3e8 to 1e25 in 200
    iterations at lr = 0.02 with S = I). Its off-diagonal entries therefore get their own, 10× smaller rate, and
    L_q starts at 0.05·I: with 10⁴-10⁶ stars the posterior is far narrower than the prior, and starting at the
    prior (S = I) makes the first iterations dominated by rare huge samples of 10^phi. The diagonal is learned as
    log diag(L_q) at ``lr``: only M entries, each moving by a factor, not by a fixed amount. With the small rate
    there too, the posterior scales were still growing from 0.05 when the map rule fired (the measurements behind
    these choices are in the docs, Design notes, "SVI learning rates").
    """

    method: str = "newton"
    inducing_points: int = 1000
    length_scale: float | list[float] = 20.0
    scale: float = 0.5
    mean: float | None = None
    learn_inducing_locations: bool = True
    learn_hyperparameters: bool = True
    particles: int = 32
    lr: float = 0.02
    lr_covariance: float = 0.002
    initial_posterior_std: float = 0.05
    lr_decay: float = 1.0
    lr_decay_iterations: int = 1000
    weight_decay: float = 0.0
    max_iterations: int | None = None
    stop: str = "map"
    tol: float = 0.02
    window: int = 200
    check_every: int = 25
    patience: int = 3
    elbo_tol: float = 0.01
    elbo_window: int = 10
    min_iterations: int = 20
    step_tol: float = 2e-3
    warmup: int = 2
    likelihood: str = "mixture"
    nu: float = 4.0
    outlier_fraction: float = 0.02
    learn_outlier_fraction: bool = True
    distance_uncertainty: str = "auto"
    distance_nodes: int = 8
    error_floor: float = 0.01
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {self.method!r}")
        if self.max_iterations is None:
            self.max_iterations = DEFAULT_MAX_ITERATIONS[self.method]
        if self.stop not in STOP_RULES:
            raise ValueError(f"stop: expected one of {STOP_RULES}, got {self.stop!r}")
        if self.likelihood not in NOISE_MODELS:
            raise ValueError(f"likelihood: expected one of {NOISE_MODELS}, got {self.likelihood!r}")
        if self.distance_uncertainty not in DISTANCE_TREATMENTS:
            raise ValueError(
                f"distance_uncertainty: expected one of {DISTANCE_TREATMENTS}, got {self.distance_uncertainty!r}"
            )
        if not (math.isfinite(self.nu) and self.nu > 0):
            raise ValueError(f"nu: expected a positive number of degrees of freedom, got {self.nu!r}")
        if not 1e-4 <= self.outlier_fraction <= 0.5:
            raise ValueError(f"outlier_fraction: expected a fraction in [1e-4, 0.5], got {self.outlier_fraction!r}")
        if not (math.isfinite(self.error_floor) and self.error_floor >= 0):
            raise ValueError(f"error_floor: expected a non-negative uncertainty in mag, got {self.error_floor!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {self.dtype!r}")
        names = (
            "inducing_points",
            "particles",
            "max_iterations",
            "window",
            "check_every",
            "patience",
            "checkpoint_every",
            "distance_nodes",
        )
        for name in names:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        ls = np.atleast_1d(np.asarray(self.length_scale, dtype=float))
        if ls.size not in (1, 3) or np.any(ls <= 0):
            raise ValueError(f"length_scale: expected one or three positive lengths in pc, got {self.length_scale}")
        if self.scale <= 0:
            raise ValueError(f"scale: expected a positive variance in dex², got {self.scale}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float32 if self.dtype == "float32" else torch.float64

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FitConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"fit config: unknown options {unknown}; known: {sorted(known)}")
        return cls(**values)


# --------------------------------------------------------------------------------------------------------------
# The ELBO as a Pyro program


class _WhitenedPrior(pdist.Independent):
    """N(0, I) over the whitened inducing values; a class of its own so that its KL can be registered below."""


@register_kl(pdist.MultivariateNormal, _WhitenedPrior)
def _kl_to_whitened_prior(q: pdist.MultivariateNormal, p: _WhitenedPrior) -> torch.Tensor:
    # ½[tr S + mᵀm - M - ln det S] in closed form against N(0, I), O(M²): torch's generic MVN-MVN KL would
    # do an M × M triangular solve per step.
    l_q = q._unbroadcasted_scale_tril
    m = q.loc
    half_logdet = l_q.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    kl = 0.5 * ((l_q * l_q).sum((-1, -2)) + (m * m).sum(-1) - m.shape[-1]) - half_logdet
    return kl.expand(torch.broadcast_shapes(q.batch_shape, p.batch_shape))


class _Elbo:
    """Pyro model and guide for one fit; tensors live on the fit's device and dtype."""

    def __init__(
        self,
        gp: DustGP,
        cells: torch.Tensor,
        stats: GaussianStatistics,
        grid: Grid,
        likelihood: StarLikelihood | None = None,
    ) -> None:
        self.gp, self.cells, self.stats, self.likelihood = gp, cells, stats, likelihood
        self.shape = (grid.n_d, grid.n_columns)
        self.workspace = Workspace()

    def model(self) -> None:
        pyro.module("dustgp", self.gp)
        m = self.gp.variational_mean
        prior = _WhitenedPrior(pdist.Normal(torch.zeros_like(m), torch.ones_like(m)), 1)
        v = pyro.sample("v", prior)
        weights = self.gp.whitened_weights(v.reshape(-1, m.shape[0]))
        density = torch.pow(10.0, self.gp.phi(self.cells, weights, self.workspace))
        if self.likelihood is None:  # Gaussian, one node per star: the sufficient statistics
            log_l = self.stats.log_likelihood(density.reshape(-1, *self.shape))
        else:
            log_l = self.likelihood.log_likelihood(density.reshape(-1, density.shape[-1])).to(density.dtype)
        pyro.factor("stars", log_l.reshape(v.shape[:-1]))

    def guide(self) -> None:
        pyro.module("dustgp", self.gp)
        q = pdist.MultivariateNormal(self.gp.variational_mean, scale_tril=self.gp.variational_scale_tril())
        pyro.sample("v", q)

    @torch.no_grad()
    def sample_density(self, n: int) -> torch.Tensor:
        """``n`` joint draws of the density on the training cells from q, mag/pc, shape ``(n, n_cells)``."""
        q = pdist.MultivariateNormal(self.gp.variational_mean, scale_tril=self.gp.variational_scale_tril())
        weights = self.gp.whitened_weights(q.sample((n,)))
        return torch.pow(10.0, self.gp.phi(self.cells, weights, self.workspace))

    @torch.no_grad()
    def mean_log_density(self) -> torch.Tensor:
        """log10 density of the posterior-mean phi on the training cells (no sampling)."""
        weights = self.gp.projection(self.gp.variational_mean[None, :], self.gp.inducing_cholesky())
        return self.gp.phi(self.cells, weights, self.workspace)[0]


def _optimizer_args(config: FitConfig):
    def args(name: str) -> dict[str, float]:
        variational = "variational_distribution" in name
        lr = config.lr_covariance if "chol_variational_covar" in name else config.lr
        return {"lr": lr, "weight_decay": config.weight_decay if variational else 0.0}

    return args


def _with_learning_rates(state: dict[str, Any], config: FitConfig) -> dict[str, Any]:
    """A checkpoint's optimiser state with this fit's learning rates and weight decay.

    Loading an optimiser state restores the rates it was saved with; without this, rates given as options to a
    resumed fit would be silently ignored.
    """
    args = _optimizer_args(config)
    for name, optim_state in state.items():
        for group in optim_state["param_groups"]:
            group.update(args(name))
    return state


def _set_learning_rates(optimizer: pyro.optim.PyroOptim, config: FitConfig, iteration: int) -> None:
    if config.lr_decay == 1.0:
        return  # constant rates: the optimisers already hold them
    factor = config.lr_decay ** (min(iteration, config.lr_decay_iterations) / config.lr_decay_iterations)
    store, initial = pyro.get_param_store(), _optimizer_args(config)
    for param, optim in optimizer.optim_objs.items():
        start = initial(store.param_name(param))["lr"]
        for group in optim.param_groups:
            group["lr"] = start * factor


# --------------------------------------------------------------------------------------------------------------
# Stop rules


class _MapConvergence:
    """The default stop rule: the posterior-mean map no longer moves."""

    def __init__(self, config: FitConfig) -> None:
        self.config = config
        self.snapshots: deque[tuple[int, torch.Tensor]] = deque()
        self.passed = 0

    def update(self, iteration: int, log_density: torch.Tensor) -> float | None:
        """Record the map at ``iteration``; return the change over the window once a full window is held."""
        self.snapshots.append((iteration, log_density.clone()))
        while self.snapshots and self.snapshots[0][0] < iteration - self.config.window:
            self.snapshots.popleft()
        first_iteration, first = self.snapshots[0]
        if iteration - first_iteration < self.config.window:
            return None
        change = torch.quantile((torch.pow(10.0, log_density - first) - 1.0).abs().double().cpu(), 0.9)
        self.passed = self.passed + 1 if change < self.config.tol else 0
        return float(change)

    @property
    def converged(self) -> bool:
        return self.passed >= self.config.patience


def _elbo_rule_fires(losses: list[float], config: FitConfig) -> bool:
    if len(losses) < config.elbo_window:
        return False
    recent = np.asarray(losses[-config.elbo_window :])
    return float(np.ptp(recent) / abs(recent.mean())) < config.elbo_tol


# --------------------------------------------------------------------------------------------------------------
# The Fit


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
        Negative ELBO (nats) at each iteration.
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

    def posterior_predictive(self) -> dict[str, Any]:
        """Summary of the posterior predictive checks: are the stars' extinctions what the fitted map predicts?

        ``inside_16_84`` is the share of stars whose observation lies inside its predictive 16-84% interval (0.68
        for a calibrated model); ``residual_quantiles`` the 16/50/84th percentiles of the normalised residuals
        ``Φ⁻¹(PIT)`` (-1, 0, 1 when calibrated) and ``ks_statistic`` their Kolmogorov-Smirnov distance to N(0, 1);
        ``flagged`` counts the stars flagged as outliers (outlier probability > 0.5 in the mixture, ``|residual|`` > 3
        otherwise); ``outlier_fraction`` is the mixture's fitted ε.
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
        }

    def hyperparameters(self) -> dict[str, float | list[float]]:
        """The five hyperparameters in physical units (see :meth:`DustGP.hyperparameters`)."""
        return self.model.hyperparameters()

    @property
    def elbo(self) -> np.ndarray:
        return -self.losses

    def predict(self, grid: Grid | None = None, **options: Any):
        """Posterior map on ``grid`` (default: the training grid refined 2.5×); see :func:`dustgp.predict`."""
        return predict(self, grid, **options)

    def save(self, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """Write the fit as a checkpoint (weights only, loadable without executing code)."""
        return _write_checkpoint(path, _checkpoint_payload(self, None, None), overwrite=overwrite)

    def summary(self) -> str:
        h = self.hyperparameters()
        gx, gy, gz = h["length_scale_pc"]
        return "\n".join(
            [
                f"stars used {self.stars.get('used', 0)}, off grid {self.stars.get('off_grid', 0)}, "
                f"in ghost cells {self.stars.get('in_ghost_cells', 0)}",
                f"{self.iterations} {self.config.method} iterations in {self.seconds:.1f} s, stopped by "
                f"{self.stopped_by} ({'converged' if self.converged else 'NOT converged'}"
                f"{'' if self.learned else '; LEARNED NOTHING: hyperparameters and q(v) at their initial values'}); "
                f"final -ELBO {self.losses[-1]:.6g}"
                if self.losses.size
                else "no iterations",
                f"length scales {gx:.1f}, {gy:.1f}, {gz:.1f} pc; scale {h['scale_dex']:.3f} dex; "
                f"mean density 10^{h['mean_log10_density']:.3f} mag/pc",
            ]
        )


def _inducing_init(catalog: Catalog, grid: Grid, m: int, rng: np.random.Generator, length_scale: float) -> np.ndarray:
    """Initial inducing locations (pc): random star positions, and random ghost-cell centres in proportion to
    the ghost cells' share of the grid.

    No star lies in the ghost cells, so without inducing points there the foreground could not depart from the
    prior mean; a foreground much thinner than the mean would then bias every star near ``d_min``.
    """
    n_ghost = round(m * grid.ghost_cells / grid.n_d) if grid.ghost_cells else 0
    xyz = lbd_to_xyz(catalog.l, catalog.b, catalog.distance)
    replace = m - n_ghost > len(xyz)
    z = xyz[rng.choice(len(xyz), size=m - n_ghost, replace=replace)]
    ghosts = grid.cell_centers_xyz().reshape(grid.n_d, grid.n_columns, 3)[: grid.ghost_cells].reshape(-1, 3)
    z = np.concatenate([z, ghosts[rng.choice(len(ghosts), size=n_ghost, replace=n_ghost > len(ghosts))]])
    if replace or n_ghost > len(ghosts):  # duplicated points would make K_zz singular
        z = z + rng.normal(scale=0.05 * length_scale, size=z.shape)
    return z


def fit(
    catalog: Catalog,
    grid: Grid,
    *,
    config: FitConfig | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
    **options: Any,
) -> Fit:
    """Train the model on a catalogue over a grid.

    Parameters
    ----------
    catalog : Catalog
        Stars with l, b (deg), distance (pc), extinction and its uncertainty (mag).
    grid : Grid
        Training grid (ghost cells included).
    config : FitConfig, optional
        All options at once; keyword ``options`` (any :class:`FitConfig` field, e.g. ``inducing_points=1000``,
        ``length_scale=20``, ``seed=1``, ``method="svi"``) override it.
    checkpoint : path, optional
        Write a checkpoint here every ``checkpoint_every`` iterations, at the end and on Ctrl-C or SIGTERM
        (atomically; a signal ends the step under way first, a second one stops at once).
    resume : path, optional
        Continue from this checkpoint (its model, optimiser and random state; ``options`` may raise
        ``max_iterations``, change the stop rule or set new learning rates).
    progress : bool
        Show a progress bar (stderr) with iteration, loss, map change and ETA.

    Returns
    -------
    Fit
        ``Fit.converged`` says whether the stop rule was met; a fit that ran out of iterations warns.

    Raises
    ------
    FitError
        No star lies on the grid, or the checkpoint does not belong to this grid.
    """
    previous = load_checkpoint(resume) if resume is not None else None
    base = FitConfig.from_dict(previous["config"]) if previous and config is None else (config or FitConfig())
    config = dataclasses.replace(base, **options) if options else base
    if previous:
        saved = FitConfig.from_dict(previous["config"])
        for name in ("method", "inducing_points", "learn_inducing_locations"):
            if getattr(saved, name) != getattr(config, name):
                raise FitError(
                    f"checkpoint {resume} was made with {name}={getattr(saved, name)!r}, "
                    f"not {getattr(config, name)!r}: a resumed fit continues the same model"
                )
    newton = config.method == "newton"
    # the second-order method computes in float64 (see dustgp.newton); SVI in the configured dtype
    dtype, device = (torch.float64 if newton else config.torch_dtype), torch.device(config.device)

    sightlines = Sightlines.from_positions(grid, catalog.l, catalog.b, catalog.distance)
    stars = {
        "used": len(sightlines),
        "off_grid": sightlines.n_off_grid,
        "in_ghost_cells": sightlines.n_in_ghost_cells,
    }
    if sightlines.n_off_grid or sightlines.n_in_ghost_cells:
        logger.warning(
            "%d of %d stars are off the grid and %d lie in the ghost cells (d < %g pc): they are not used",
            sightlines.n_off_grid,
            len(catalog),
            sightlines.n_in_ghost_cells,
            grid.d_min,
        )
    if len(sightlines) == 0:
        raise FitError(f"no star of the catalogue ({len(catalog)} stars) lies on the grid {grid!r}")
    used = sightlines.star_index
    if not newton and config.dtype == "float32":
        # the uncertainties the likelihood sees: the error floor added in quadrature
        too_fine = _beyond_float32(catalog.extinction[used], np.hypot(catalog.extinction_err[used], config.error_floor))
        if too_fine:
            logger.warning("%s: this fit computes in float64 (dtype='float64')", too_fine)
            config = dataclasses.replace(config, dtype="float64")
            dtype = torch.float64
    fingerprint = data_fingerprint(catalog.select(used), grid)
    if previous and previous.get("data_fingerprint", fingerprint) != fingerprint:
        raise FitError(
            f"checkpoint {resume} was fitted to other stars or another grid (its data fingerprint differs): "
            "resume with the catalogue and grid it was made with, or start a new fit"
        )
    likelihood = _star_likelihood(catalog.select(used), sightlines, config, dtype=dtype, device=device)
    if previous and "likelihood" in previous:
        likelihood.outlier_fraction = float(previous["likelihood"]["outlier_fraction"])
    stats = likelihood.statistics()
    cells_pc = torch.as_tensor(grid.cell_centers_xyz(), dtype=dtype, device=device)

    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    gamma = float(np.mean(config.length_scale))
    if previous:
        if Grid.from_dict(previous["grid"]) != grid:
            raise FitError(f"checkpoint {resume} was made on another grid: {Grid.from_dict(previous['grid'])!r}")
        gp = _model_from_state(previous["model"], config)
    else:
        a_over_d = catalog.extinction[used] / catalog.distance[used]
        mean = config.mean
        if mean is None:
            positive = a_over_d[a_over_d > 0]
            mean = float(np.log10(np.median(positive))) if positive.size else -3.0
        z = _inducing_init(catalog.select(used), grid, config.inducing_points, rng, gamma)
        gp = DustGP(
            torch.as_tensor(z, dtype=dtype),
            mean=mean,
            scale=config.scale,
            length_scale=tuple(np.broadcast_to(config.length_scale, 3).tolist()),
            learn_inducing_locations=config.learn_inducing_locations,
        )
        with torch.no_grad():
            gp.variational_log_diag.fill_(math.log(config.initial_posterior_std))
    gp = gp.to(device)
    cells = cells_pc / gp.length_unit
    runner: _Runner = (
        _NewtonRunner(gp, cells, stats, grid, config, likelihood)
        if newton
        else _SviRunner(gp, cells, stats, grid, config, previous, likelihood)
    )
    if previous and isinstance(runner, _NewtonRunner):
        runner.restore(previous["optimizer"])

    losses: list[float] = list(previous["losses"].tolist()) if previous else []
    changes: list[tuple[int, float]] = [tuple(r) for r in previous["map_changes"].tolist()] if previous else []
    seconds = float(previous["seconds"]) if previous else 0.0
    start_iteration = len(losses)
    stopped_by = "max_iterations"
    result = Fit(gp, grid, config, np.empty(0), np.empty((0, 2)), 0, "", 0.0, stars)
    result.data_fingerprint = fingerprint
    result.likelihood = likelihood
    result.star_distances = _star_distances(sightlines, catalog.distance[used], grid)
    initial = _parameter_values(gp)
    learned_before = bool(previous and previous.get("learned", True) and start_iteration > 0)

    def snapshot(state: str) -> Fit:
        runner.store()
        result.losses = np.asarray(losses)
        result.map_changes = np.asarray(changes, dtype=float).reshape(-1, 2)
        result.iterations = len(losses)
        result.stopped_by = state
        result.converged = state in CONVERGED
        result.seconds = seconds + (time.perf_counter() - started)
        result.learned = learned_before or _moved(initial, gp)
        return result

    def save(state: str) -> None:
        if checkpoint is not None:
            _write_checkpoint(
                checkpoint, _checkpoint_payload(snapshot(state), runner.optimizer_state(), torch.get_rng_state())
            )

    started = time.perf_counter()
    bar = tqdm(
        total=config.max_iterations,
        initial=start_iteration,
        disable=not progress,
        desc=f"fit ({config.method})",
        unit="step" if newton else "it",
        dynamic_ncols=True,
    )
    gp.train()
    signals = _StopAtStepEnd()
    # Pyro's argument validation re-checks the M × M scale_tril at every step, which costs time; the model
    # builds valid distributions by construction and a non-finite loss is caught below.
    with pyro.validation_enabled(False), signals:
        try:
            for iteration in range(start_iteration + 1, config.max_iterations + 1):
                loss, change, stop = runner.step(iteration, losses)
                if not math.isfinite(loss):
                    raise FitError(f"the ELBO became {loss} at iteration {iteration}; lower lr (now {config.lr})")
                losses.append(loss)
                postfix = {"loss": f"{loss:.6g}"}
                if change is not None:
                    changes.append((iteration, change))
                    postfix["map_change"] = f"{change:.3%}"
                bar.set_postfix(postfix, refresh=False)
                bar.update()
                if checkpoint is not None and iteration % config.checkpoint_every == 0:
                    save("running")
                if stop is not None and (newton or iteration >= min(config.min_iterations, config.max_iterations)):
                    stopped_by = stop
                    break
                if signals.requested is not None:
                    stopped_by = signals.requested
                    logger.warning(
                        "%s at iteration %d; %s",
                        stopped_by,
                        len(losses),
                        f"checkpoint written to {checkpoint}" if checkpoint else "no checkpoint path was given",
                    )
                    break
        except KeyboardInterrupt:
            stopped_by = signals.requested or "interrupted"
            logger.warning(
                "%s at iteration %d; %s",
                stopped_by,
                len(losses),
                f"checkpoint written to {checkpoint}" if checkpoint else "no checkpoint path was given",
            )
        finally:
            bar.close()
    gp.eval()
    save(stopped_by)
    result = snapshot(stopped_by)
    result.star_checks = _star_checks(catalog.select(used), likelihood, runner.predictive())
    if not result.converged and stopped_by not in INTERRUPTED and config.stop != "none":
        logger.warning(
            "the fit did not converge (%s after %d %s); the map may still change: raise max_iterations or resume",
            stopped_by,
            result.iterations,
            "steps" if newton else "iterations",
        )
    if not result.learned and result.iterations > 0:
        logger.warning(
            "the fit learned nothing: after %d %s the hyperparameters and the mean of q(v) are at their initial "
            "values, so the map is the prior's; check the stars' uncertainties and the learning rates",
            result.iterations,
            "steps" if newton else "iterations",
        )
    logger.info("fit: %s", result.summary().replace("\n", "; "))
    return result


#: float32 resolves an extinction residual A_i - a_i to about eps32 · max|A| (1.2e-7 · max|A|); the smallest
#: uncertainty must exceed that by this factor, or the likelihood's gradients are rounding noise.
FLOAT32_SIGMA_MARGIN = 100.0
#: Largest total weight Σ 1/σ_i² (mag⁻²) for float32: Adam squares the gradients, which grow with it, and
#: float32 overflows at 3.4e38 (gradients of ~1.8e19); 1e12 leaves six orders of magnitude for residuals and
#: the chain through the kernel. Real catalogues stay far below (10⁷ stars at 0.01 mag: 1e11).
FLOAT32_MAX_TOTAL_WEIGHT = 1e12


def _beyond_float32(extinction: np.ndarray, sigma: np.ndarray) -> str | None:
    """Why SVI in float32 cannot fit these stars (mag), or None when it can.

    With uncertainties of 1e-12 mag in float32, Adam's squared gradients overflow and every update is zero: the
    fit "succeeds" with all parameters at their initial values. float64 learns from the same stars.
    """
    resolution = float(np.finfo(np.float32).eps) * max(float(np.max(np.abs(extinction))), 1.0)
    smallest = float(np.min(sigma))
    if smallest < FLOAT32_SIGMA_MARGIN * resolution:
        return (
            f"the smallest extinction uncertainty, {smallest:.3g} mag, is below what float32 resolves in "
            f"extinctions up to {np.max(np.abs(extinction)):.3g} mag ({FLOAT32_SIGMA_MARGIN:g} x {resolution:.2g} mag)"
        )
    total = float(np.sum(1.0 / np.square(sigma, dtype=np.float64)))
    if total > FLOAT32_MAX_TOTAL_WEIGHT:
        return (
            f"the stars' total weight sum(1/sigma^2) = {total:.3g} mag^-2 exceeds {FLOAT32_MAX_TOTAL_WEIGHT:.0e}, "
            "where float32 gradients squared by the optimiser overflow"
        )
    return None


def _star_distances(sightlines: Sightlines, distance: np.ndarray, grid: Grid) -> np.ndarray:
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


#: Parameters whose change means a fit learned from the stars: the hyperparameters and the mean of q(v), which
#: carry the data into the map's median. Inducing locations and q's covariance are left out: in a float32 fit
#: whose squared gradients overflow they still move by a step or two while the map stays the prior's.
_LEARNING_PARAMETERS = ("mean_module.", "covar_module.", "variational_mean")


def _parameter_values(gp: DustGP) -> dict[str, torch.Tensor]:
    """A float64 copy (on the CPU) of the hyperparameters and the mean of q(v) (``_LEARNING_PARAMETERS``)."""
    return {
        name: p.detach().to("cpu", torch.float64, copy=True)
        for name, p in gp.named_parameters()
        if any(key in name for key in _LEARNING_PARAMETERS)
    }


def _moved(initial: dict[str, torch.Tensor], gp: DustGP) -> bool:
    """Whether any parameter differs from ``initial`` by more than rounding (1e-6, relative and absolute).

    The second-order method writes its state back through a Cholesky factorisation of an inverse, which changes
    an unmoved q(v) at the 1e-12 level; a fit that learns moves its parameters by far more than 1e-6.
    """
    now = _parameter_values(gp)
    return any(
        name not in initial
        or now[name].shape != initial[name].shape
        or not torch.allclose(now[name], initial[name], rtol=1e-6, atol=1e-6)
        for name in now
    )


def _star_likelihood(
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
            "(give a distance_err column or 16th/84th-percentile distances, or use distance_uncertainty='none')"
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
        posterior = lognormal_nodes(catalog.distance, catalog.distance_err, config.distance_nodes)
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
        dtype=dtype,
        device=device,
    )
    likelihood.distance_treatment = treatment
    return likelihood


def _star_checks(catalog: Catalog, likelihood: StarLikelihood, checks: dict[str, np.ndarray] | None) -> Table | None:
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


#: Monte Carlo draws of the map behind SVI's posterior predictive checks (PIT error ≲ 1/sqrt(draws) of its spread)
PREDICTIVE_DRAWS = 128
#: ``Fit.stopped_by`` values that mean the stop rule was met
CONVERGED = ("converged", "map converged", "elbo rule")
#: ``Fit.stopped_by`` of a fit stopped from outside: Ctrl-C, or SIGTERM (a batch scheduler's time limit)
INTERRUPTED = ("interrupted", "terminated")


#: ``Fit.stopped_by`` of a fit ended by each signal
_STOP_SIGNALS = {signal.SIGTERM: "terminated", signal.SIGINT: "interrupted"}


class _StopAtStepEnd:
    """Within the block, SIGTERM and Ctrl-C (SIGINT) end a fit after its current step; a second one at once.

    A signal landing inside a step would stop it half-done: some parameters (or Adam moments, or an L-BFGS pair)
    updated, others not, and the checkpoint would hold a state the uninterrupted fit never passed through, so a
    resume would not continue the same trajectory. The first signal is therefore only recorded (``requested``:
    ``"terminated"`` for SIGTERM, a batch scheduler's time limit; ``"interrupted"`` for Ctrl-C) and the loop
    stops at the end of the step, checkpoint written. A second signal raises KeyboardInterrupt at once (the
    last checkpoint is kept). Only in the main thread (signal handlers cannot be set elsewhere); the previous
    handlers are restored after.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = _STOP_SIGNALS[signum]
        logger.warning("%s: stopping after the current step (signal again to stop at once)", self.requested)

    def __enter__(self) -> _StopAtStepEnd:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in _STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


class _Runner:
    """One way of maximising the ELBO, stepped by :func:`fit`'s loop (progress, checkpoints, Ctrl-C)."""

    def step(self, iteration: int, losses: list[float]) -> tuple[float, float | None, str | None]:
        """Advance once: ``(-ELBO, map change or None, stop reason or None)``."""
        raise NotImplementedError

    def store(self) -> None:
        """Write the current parameters into the model (for checkpoints and the result)."""

    def optimizer_state(self) -> dict[str, Any]:
        return {}

    def predictive(self) -> dict[str, np.ndarray] | None:
        """Posterior predictive checks per star at the current parameters (see StarLikelihood.predictive)."""
        return None


class _SviRunner(_Runner):
    """The paper's scheme: Pyro SVI with Monte Carlo ELBO gradients and AdamW."""

    def __init__(
        self,
        gp: DustGP,
        cells: torch.Tensor,
        stats: GaussianStatistics,
        grid: Grid,
        config: FitConfig,
        previous,
        likelihood: StarLikelihood,
    ) -> None:
        self.config, self.likelihood = config, likelihood
        self.objective = _Elbo(gp, cells, stats, grid, None if likelihood.static else likelihood)
        pyro.clear_param_store()
        self.optimizer = pyro.optim.AdamW(_optimizer_args(config))
        if previous:
            self.optimizer.set_state(_with_learning_rates(previous["optimizer"], config))
            torch.set_rng_state(previous["rng"])
        elbo = TraceMeanField_ELBO(num_particles=config.particles, vectorize_particles=True, max_plate_nesting=0)
        self.svi = SVI(self.objective.model, self.objective.guide, self.optimizer, loss=elbo)
        self.rule = _MapConvergence(config)

    def step(self, iteration: int, losses: list[float]) -> tuple[float, float | None, str | None]:
        config = self.config
        _set_learning_rates(self.optimizer, config, iteration)
        loss = self.svi.step()
        change = None
        if iteration % config.check_every == 0:
            change = self.rule.update(iteration, self.objective.mean_log_density())
        stop = None
        if config.stop == "map" and self.rule.converged:
            stop = "map converged"
        elif config.stop == "elbo" and _elbo_rule_fires([*losses, loss], config):
            stop = "elbo rule"
        return loss, change, stop

    def optimizer_state(self) -> dict[str, Any]:
        return self.optimizer.get_state()

    @torch.no_grad()
    def predictive(self) -> dict[str, np.ndarray]:
        """From Monte Carlo moments of the model extinction at every node (SVI's q carries no closed form)."""
        draws = self.objective.sample_density(PREDICTIVE_DRAWS)  # (draws, n_cells)
        sum_a = sum_a2 = 0.0
        for chunk in draws.split(16):
            a = self.likelihood.nodes.sightlines.extinction(chunk.to(self.likelihood.dtype))
            sum_a = sum_a + a.sum(0)
            sum_a2 = sum_a2 + (a * a).sum(0)
        mean_a, mean_a2 = sum_a / draws.shape[0], sum_a2 / draws.shape[0]
        self.likelihood.update_nodes(mean_a, mean_a2)
        return self.likelihood.predictive_nodes(mean_a, mean_a2)


class _NewtonRunner(_Runner):
    """The default: natural-gradient steps on q(v) and L-BFGS steps on theta, exact ELBO (see dustgp.newton).

    Stop rule ``"map"``: the median density changed by less than ``step_tol`` and the posterior spread of phi by
    less than 5 × ``step_tol`` (q90 over the training cells, relative), and the ELBO by less than max(1, 0.01 per
    1000 stars) nats, at ``patience`` steps in a row; a step that cannot raise the ELBO any more also ends the
    fit converged.
    ``"elbo"``: the paper's rule over the last ``elbo_window`` steps.
    """

    def __init__(
        self,
        gp: DustGP,
        cells: torch.Tensor,
        stats: GaussianStatistics,
        grid: Grid,
        config: FitConfig,
        likelihood: StarLikelihood,
    ) -> None:
        self.gp, self.config, self.likelihood = gp, config, likelihood
        learn_z = config.learn_inducing_locations and config.learn_hyperparameters
        fixed = None if learn_z else gp.inducing_points.detach()
        self.problem = newton.NewtonProblem.build(
            cells, grid.n_d, stats, fixed_z=fixed, learn_hyperparameters=config.learn_hyperparameters
        )
        theta, m, l_precision = _newton_start(gp, self.problem)
        self.optimizer = newton.NewtonOptimizer(
            self.problem, theta, m, l_precision, warmup=config.warmup, likelihood=likelihood
        )
        self.elbo_tol = max(1.0, 1e-5 * stats.n_stars)
        self.passed = 0

    def step(self, iteration: int, losses: list[float]) -> tuple[float, float | None, str | None]:
        moved = self.optimizer.step()
        state = self.optimizer.state
        if moved is None:
            return -state.elbo, 0.0, "converged"
        old, new = moved
        median, spread = newton.relative_change(old, new)
        tol = self.config.step_tol
        small = median < tol and spread < 5.0 * tol and new.elbo - old.elbo < self.elbo_tol
        self.passed = self.passed + 1 if small and self.optimizer.steps > self.config.warmup else 0
        stop = None
        if self.config.stop == "map" and self.passed >= self.config.patience:
            stop = "converged"
        elif self.config.stop == "elbo" and _elbo_rule_fires([*losses, -new.elbo], self.config):
            stop = "elbo rule"
        return -new.elbo, median, stop

    def store(self) -> None:
        _newton_store(self.gp, self.problem, self.optimizer.state)

    def optimizer_state(self) -> dict[str, Any]:
        """Step count, stop-rule streak and both L-BFGS memories (plain tensors, for weights-only checkpoints).

        Without them a resumed fit warms up again (q alone) and starts L-BFGS from a gradient step: measured on a
        300-star, M = 20 fit resumed after 4 of 8 steps, the map then differed from the uninterrupted one by a
        factor of up to 7; with them, by rounding.
        """
        return {
            "steps": self.optimizer.steps,
            "passed": self.passed,
            "lbfgs": [[[s.cpu(), y.cpu()] for s, y in memory.pairs] for memory in self.optimizer.lbfgs],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`optimizer_state` (a checkpoint without it starts a fresh memory and warm-up)."""
        if "lbfgs" not in state:
            return
        self.optimizer.steps, self.passed = int(state["steps"]), int(state["passed"])
        device = self.problem.cells.device
        for memory, pairs in zip(self.optimizer.lbfgs, state["lbfgs"], strict=True):
            memory.pairs.clear()
            memory.pairs.extend((s.to(device), y.to(device)) for s, y in pairs)

    def predictive(self) -> dict[str, np.ndarray]:
        """From the exact moments of the model extinction under the final q (with the conditional covariance)."""
        return self.likelihood.predictive(self.optimizer.cell_moments)


def _newton_start(gp: DustGP, problem: newton.NewtonProblem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat theta, m and the Cholesky factor of S⁻¹ from the model's parameters, on the problem's device."""
    device = problem.cells.device
    with torch.no_grad():
        h = gp.hyperparameters()
        gamma = torch.as_tensor(h["length_scale_pc"], dtype=newton.DTYPE) / float(gp.length_unit)
        z = None if problem.fixed_z is not None else gp.inducing_points.detach().cpu()
        theta = newton.pack(h["mean_log10_density"], h["scale_dex2"], gamma, z).to(device)
        m = gp.variational_mean.detach().to(device=device, dtype=newton.DTYPE).clone()
        l_s = gp.variational_scale_tril().detach().to(device=device, dtype=newton.DTYPE)
        eye = torch.eye(l_s.shape[0], dtype=newton.DTYPE, device=device)
        l_s_inv = torch.linalg.solve_triangular(l_s, eye, upper=False)
        l_precision = torch.linalg.cholesky(l_s_inv.T @ l_s_inv)
    return theta, m, l_precision


@torch.no_grad()
def _newton_store(gp: DustGP, problem: newton.NewtonProblem, state: newton.NewtonState) -> None:
    c, alpha, gamma, z = problem.unpack(state.theta)
    gp.mean_module.constant.fill_(float(c))
    gp.covar_module.outputscale = alpha.to(gp.length_unit.dtype)
    gp.covar_module.base_kernel.lengthscale = gamma.to(gp.length_unit.dtype)
    if problem.fixed_z is None:
        gp.variational_strategy.inducing_points.copy_(z)
    covariance = torch.cholesky_inverse(state.l_precision)
    l_s = torch.linalg.cholesky(0.5 * (covariance + covariance.T))
    gp.variational_strategy._variational_distribution.variational_mean.copy_(state.m)
    gp.variational_strategy._variational_distribution.chol_variational_covar.copy_(l_s)
    gp.variational_log_diag.copy_(l_s.diagonal().log())


# --------------------------------------------------------------------------------------------------------------
# Checkpoints: plain tensors, numbers and strings only, so torch.load(weights_only=True) reads them.


def _checkpoint_payload(
    result: Fit, optimizer_state: dict[str, Any] | None, rng_state: torch.Tensor | None
) -> dict[str, Any]:
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
        "likelihood": {"outlier_fraction": (result.likelihood or result.config).outlier_fraction},
        "learned": result.learned,
        "star_distances": (
            None if result.star_distances is None else torch.as_tensor(result.star_distances, dtype=torch.float64)
        ),
    }


def data_fingerprint(catalog: Catalog, grid: Grid) -> str:
    """SHA-256 of the fitted stars (l, b, distance, extinction, uncertainty, in order) and of the grid.

    Stored in checkpoints, so that a fit is resumed only on the data it was started on.
    """
    digest = hashlib.sha256()
    for column in (catalog.l, catalog.b, catalog.distance, catalog.extinction, catalog.extinction_err):
        digest.update(np.ascontiguousarray(column, dtype=np.float64).tobytes())
    digest.update(json.dumps(grid.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()


def _write_checkpoint(path: str | os.PathLike, payload: dict[str, Any], *, overwrite: bool = True) -> Path:
    """Write atomically (:func:`dustgp._atomic.atomic_path`: fsynced, renamed in one step): a reader, or a resume after
    a crash, sees the old checkpoint or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint without executing code (``torch.load(weights_only=True)``).

    Raises
    ------
    FileNotFoundError
    FitError
        The file is not a dustgp checkpoint (damaged, truncated, foreign, or holding code). torch's own message
        is not passed on: it suggests loading the file with ``weights_only=False``, i.e. running its code.
    """
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...: the file is not to be trusted
        if os.path.getsize(path) == 0:
            why = "the file is empty"
        elif not zipfile.is_zipfile(path):
            why = "not a torch archive (truncated, or another kind of file)"
        else:
            why = f"its content cannot be loaded safely ({type(exc).__name__})"
        raise FitError(f"{path} is not a dustgp checkpoint: {why}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise FitError(f"{path} is not a dustgp checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return payload


def _model_from_state(state: dict[str, torch.Tensor], config: FitConfig) -> DustGP:
    z = state["variational_strategy.inducing_points"]
    unit = float(state["length_unit"])
    if "variational_log_diag" not in state:
        # written before the diagonal of L_q had a parameter of its own: it was |diag| of GPyTorch's factor
        raw = state["variational_strategy._variational_distribution.chol_variational_covar"]
        state = {**state, "variational_log_diag": raw.diagonal().abs().log()}
    gp = DustGP(
        (z * unit).to(torch.float64 if config.method == "newton" else config.torch_dtype),
        mean=0.0,
        learn_inducing_locations=config.learn_inducing_locations,
        length_unit=unit,
    )
    gp.load_state_dict(state)
    return gp


def load_fit(path: str | os.PathLike, *, device: str | None = None) -> Fit:
    """A :class:`Fit` from a checkpoint, ready to :meth:`~Fit.predict` (or to resume with ``fit(resume=...)``)."""
    payload = load_checkpoint(path)
    config = FitConfig.from_dict(payload["config"])
    if device is not None:
        config = dataclasses.replace(config, device=device)
    gp = _model_from_state(payload["model"], config).to(config.device)
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
