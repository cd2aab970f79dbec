"""Every knob of a fit (:class:`FitConfig`), the methods and stop rules it can name, and the error a fit raises."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..catalog import DISTANCE_NODES
from ..likelihood import DISTANCE_TREATMENTS, NOISE_MODELS
from .layout import INDUCING_LAYOUTS

__all__ = ["DEFAULT_MAX_ITERATIONS", "FOREGROUND_MODES", "METHODS", "STOP_RULES", "FitConfig", "FitError"]

STOP_RULES = ("map", "elbo", "none")
FOREGROUND_MODES = ("auto", "ghost")
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
        conditional covariance K_xx - Q_xx included) maximised by natural-gradient steps on q(v), Fisher scoring
        on the hyperparameters and L-BFGS steps on the inducing locations, each step raising the ELBO
        (:mod:`dustgp.fitting.newton`); float64. ``"svi"``: the paper's scheme, Pyro SVI with Monte Carlo
        gradients and AdamW.
    inducing_points : int
        Number M of inducing points.
    length_scale : float or list of 3 floats
        Initial kernel scale lengths (gamma_x, gamma_y, gamma_z), pc.
    scale : float
        Initial kernel scale factor alpha, dex² (prior variance of phi).
    mean : float or None
        Initial constant mean c, log10(mag/pc); ``None`` takes log10 of the median of ``A_i / d_i``.
    inducing_layout : {"greedy", "random"}
        Where the inducing points start: spread over the stars' volume (and the foreground) by greedy conditional
        variance under the starting scale lengths (the default), or at random star positions and ghost-cell
        centres (as before this option); see :mod:`dustgp.fitting.layout`.
    learn_inducing_locations : bool
        Train the inducing locations, or keep them where they start. A ``"newton"`` fit with a
        coarse stage (``coarse_start``) trains them there and holds them on the training grid.
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
        the posterior spread of phi (10 × ``step_tol``: 2% at the default, see
        :data:`dustgp.fitting.stopping.SPREAD_TOLERANCE`), per step, at ``patience`` steps in a row, or at a
        step that ends a contraction whose tail is within the tolerances
        (:class:`dustgp.fitting.stopping.StepConvergence`).
    warmup : int
        ``"newton"``: steps of q alone before the hyperparameters move (at most one on the training grid after the
        coarse stage, whose q starts near its optimum).
    coarse_start : bool
        ``"newton"``: first fit on the training grid with cells twice as large on every axis, then go on from there.
    foreground : {"auto", "ghost"}
        The dust in front of the grid's ``d_min``: held by its foreground ghost cells (``"ghost"``, the paper's), or,
        with ``"auto"`` (default), left out when the stars just behind ``d_min`` show it empty
        (:func:`dustgp.fitting.foreground.check_foreground`): the fit then trains on the grid without ghost cells,
        since a prior that must reach from empty space to the region's dust within a scale length comes out with
        too narrow bands.
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
    scatter : list of 2 floats
        Model scatter ``(τ, f)``: ``τ² + f² A_mod²`` added to every star's variance (τ in mag, f a fraction of the
        model extinction), for extinction the map cannot resolve (:mod:`dustgp.model_scatter`); the starting values
        when ``learn_scatter``. Default none.
    learn_scatter : bool
        ``"newton"``: learn ``(τ, f)`` (an EM update per step). For catalogues that sample the volume more sparsely
        than the dust varies, such as cluster catalogues, where the quoted uncertainties describe the measurement
        and not the map's ability to reproduce it.
    distance_uncertainty : {"auto", "quadrature", "moment", "inflate", "none"}
        How the catalogue's distance uncertainties enter: averaged over each star's distance posterior on
        ``distance_nodes`` quadrature nodes (``"quadrature"``; :meth:`dustgp.catalog.Catalog.distance_nodes`: the
        parallax posterior when the catalogue has parallaxes, else log-normal); one node with the model's own slope
        added to the variance (``"moment"``, newton only); the catalogue's neighbour-based inflation of sigma_A
        (``"inflate"``); or ignored (``"none"``). ``"auto"``: quadrature when the catalogue has distance
        uncertainties, otherwise none.
    distance_nodes : int
        Quadrature nodes K per star (default :data:`~dustgp.catalog.DISTANCE_NODES`, 8: a catalogue read from
        parallaxes has their nodes already, tabulated with its distances).
    error_floor : float
        Added in quadrature to every extinction uncertainty, mag: ``sqrt(sigma² + floor²)``. No photometric
        extinction is known to better than ~0.01 mag (calibration and extinction-law systematics), and a star
        quoted at 1e-4 mag otherwise pins its neighbourhood and stiffens the fit.
    missing_information : bool or "objective"
        ``"newton"``: when the fit ends, take off q's precision the information the stars' latent variables
        (distance node, outlier flag, t scale) do not carry, so that the map's bands are those of the stars'
        marginal likelihood, not of the mean-field EM that fitted it (Louis 1982;
        :mod:`dustgp.fitting.missing_information`). Default on; it changes nothing for Gaussian stars without
        distance uncertainties. SVI's ELBO marginalises them exactly and needs none. ``"objective"``: count it
        in the objective at every step instead (:mod:`dustgp.fitting.latent_information`), so that the
        hyperparameters are learned against the stars' marginal likelihood rather than the mean-field bound,
        which prefers fields too smooth along the sightline when distances are uncertain; q then ends corrected.
        It costs one computation of the missing information per update (docs: Design notes, "The bound's scale
        length through distance errors").
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
    inducing_layout: str = "greedy"
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
    coarse_start: bool = True
    foreground: str = "auto"
    likelihood: str = "mixture"
    nu: float = 4.0
    outlier_fraction: float = 0.02
    learn_outlier_fraction: bool = True
    scatter: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.0])
    learn_scatter: bool = False
    distance_uncertainty: str = "auto"
    distance_nodes: int = DISTANCE_NODES
    error_floor: float = 0.01
    missing_information: bool | str = True
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
        if self.inducing_layout not in INDUCING_LAYOUTS:
            raise ValueError(f"inducing_layout: expected one of {INDUCING_LAYOUTS}, got {self.inducing_layout!r}")
        if self.foreground not in FOREGROUND_MODES:
            raise ValueError(f"foreground: expected one of {FOREGROUND_MODES}, got {self.foreground!r}")
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
        scatter = np.asarray(self.scatter, dtype=float)
        if scatter.shape != (2,) or not np.all(np.isfinite(scatter) & (scatter >= 0)):
            raise ValueError(f"scatter: expected [floor in mag, fraction], both >= 0, got {self.scatter!r}")
        self.scatter = [float(v) for v in scatter]
        if self.learn_scatter and self.method != "newton":
            raise ValueError("learn_scatter: the scatter is learned by method='newton' only (SVI keeps it fixed)")
        if not (math.isfinite(self.error_floor) and self.error_floor >= 0):
            raise ValueError(f"error_floor: expected a non-negative uncertainty in mag, got {self.error_floor!r}")
        if not (isinstance(self.missing_information, bool) or self.missing_information == "objective"):
            got = self.missing_information
            raise ValueError(f"missing_information: expected true, false or 'objective', got {got!r}")
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

    def updated(self, **options: Any) -> FitConfig:
        """A copy with ``options`` changed; a ``max_iterations`` left at the old method's default follows a new
        ``method`` (``dustgp.fit(catalog, grid, method="svi")`` runs SVI's 3000 iterations, not newton's 200)."""
        defaulted = self.max_iterations == DEFAULT_MAX_ITERATIONS[self.method]
        if "method" in options and "max_iterations" not in options and defaulted:
            options["max_iterations"] = None
        return dataclasses.replace(self, **options)

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
