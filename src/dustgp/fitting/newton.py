"""Second-order maximisation of the ELBO: natural-gradient steps on q(v), quasi-Newton steps on the hyperparameters.

Natural-gradient update of q (Khan & Rue 2023; Salimbeni et al. 2018)
---------------------------------------------------------------------
By Price's theorem ``∂E/∂S = ½ Aᵀ E[∇²ℓ] A``, so the fixed point of the ELBO in S is
``S⁻¹ = I - 2 ∂E/∂S = I + Aᵀ E[-∇²_phi ℓ] A`` and a natural-gradient step of length β is

    Λ ← (1 - β) Λ + β (I - 2 ∂E/∂S),        m ← m + β Λ⁻¹ ∂ELBO/∂m.

At β = 1 this is a Newton step with the expected curvature, which the Gauss-Newton (Fisher) term dominates, where
Adam moves the M(M+1)/2 entries of L_q by noisy gradients. The precision moves by half of β
(:data:`PRECISION_DAMPING`), and β is capped so that no cell's mean phi moves by more than 1 dex. Should the target
precision be indefinite (the residual term of the Hessian can be negative), each column's curvature block has its
negative eigenvalues floored at zero, the Gauss-Newton choice, so that Λ ⪰ I.

Hyperparameters and inducing locations
--------------------------------------
The gradient in ``theta = (c, ln alpha, ln gamma_x, ln gamma_y, ln gamma_z, z)`` is taken at fixed q(u) over the
inducing values ``u = c + L_zz v``; q follows theta closely (one natural-gradient step per outer step), so it is
that of max_q ELBO (envelope theorem). (The gradient of a Laplace evidence at a fixed mode misses dv*/dθ and drifts
toward low density.) The five hyperparameters move by Fisher scoring, ``Δ = I⁻¹ g / ρ`` with the Fisher
information I of q's pseudo-data (:func:`~dustgp.fitting.exact_elbo.hyperparameter_fisher`) and ρ ≥ 1 the secant
ratio of the curvature met along the last step to I's (:meth:`NewtonOptimizer.secant_ratio`); the inducing
locations by L-BFGS directions. A trial step carries q to the new theta with its site held
(:func:`~dustgp.fitting.exact_elbo.transport`): the directions the stars leave to the prior follow the new
prior. Held at fixed q(u), those directions' KL counted in the curvature and L-BFGS steps on the hyperparameters
crawled along the ridge of the scale factor against the scale lengths for 60-85 steps (docs: Design notes, "Where
newton's steps go"). :func:`dustgp.fit` first runs these steps on a grid with cells twice as large and starts
from where they end (the coarse start in :mod:`dustgp.fitting.loop`).

Every accepted step raises the ELBO: the joint proposal (β, theta step) is tried with the full theta step, then
with the inducing locations held, then q alone with shorter β, and refused unless the exact ELBO increases.

The ELBO, its gradients and the move of q(u) with theta are in :mod:`dustgp.fitting.exact_elbo`;
:class:`NewtonRunner` steps :class:`NewtonOptimizer` in :func:`dustgp.fitting.fit`'s loop.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
import torch

from ..grid import Grid
from ..likelihood import StarLikelihood
from ..linalg import batched_eigh
from ..model import DustGP
from ..sightlines import GaussianStatistics, cell_extinction_moments
from .config import FitConfig
from .exact_elbo import DTYPE, Geometry, NewtonProblem, NewtonState, evaluate, pack, transport
from .stopping import StepConvergence, elbo_rule_fires

__all__ = [
    "LBFGS",
    "NewtonOptimizer",
    "NewtonRunner",
    "floored_target",
    "newton_start",
    "newton_store",
    "precision_solve",
    "propose",
    "relative_change",
]

#: The precision moves by half the natural-gradient step: the target depends on S itself (through the log-normal
#: moments), and full steps made the posterior spread oscillate by 5-15% per step on the Section 3 problem
#: (held hyperparameters), where half steps settled monotonically.
PRECISION_DAMPING = 0.5


def precision_solve(l_precision: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Λ⁻¹ b`` from the Cholesky factor of Λ (two triangular solves; torch.cholesky_solve is slower here)."""
    half = torch.linalg.solve_triangular(l_precision, b[:, None], upper=False)
    return torch.linalg.solve_triangular(l_precision.T, half, upper=True)[:, 0]


def floored_target(state: NewtonState, problem: NewtonProblem) -> torch.Tensor:
    """The target precision with each column's curvature ``-2 ∂E/∂Σ_col`` made positive semi-definite.

    The expected Hessian of the log-likelihood in phi is the Gauss-Newton term (positive semi-definite) plus a
    residual term that can be negative where the model overshoots the data; flooring the negative eigenvalues
    of each n_d × n_d block (cheap) keeps Λ ⪰ I. One more n × M × M product; used only when the exact target
    is not positive definite.
    """
    geo = state.geometry
    values, vectors = batched_eigh(-2.0 * state._grad_cov)
    curvature_blocks = (vectors * values.clamp(min=0.0)[:, None, :]) @ vectors.transpose(1, 2)
    n, m_size = geo.k.shape
    k_col = geo.k.view(problem.n_columns, problem.n_d, m_size)
    inner = geo.k.T @ torch.bmm(curvature_blocks, k_col).view(n, m_size)
    curvature = geo.x_inv @ inner @ geo.x_inv.T
    return torch.eye(m_size, dtype=DTYPE, device=geo.k.device) + 0.5 * (curvature + curvature.T)


def propose(
    state: NewtonState, beta: float, problem: NewtonProblem
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """q after a natural-gradient step of length ``beta``: ``(m, L_Λ, Λ)``, or None if Λ is not positive definite."""
    precision = state.precision
    for attempt in range(2):
        if attempt:  # the exact target was indefinite: floor it once and keep the floored one
            if state._grad_cov is None:
                return None
            state.precision_target, state._grad_cov = floored_target(state, problem), None
        beta_s = PRECISION_DAMPING * beta
        blended = (1.0 - beta_s) * precision + beta_s * state.precision_target
        blended = 0.5 * (blended + blended.T)
        l_new, info = torch.linalg.cholesky_ex(blended)
        if int(info) == 0:
            return state.m + beta * precision_solve(l_new, state.grad_m), l_new, blended
    return None


class LBFGS:
    """Limited-memory BFGS directions for *ascent* on theta (Nocedal & Wright 2006, Algorithm 7.4).

    Curvature pairs whose ``sᵀy`` is not positive (possible, since q moves between steps) are skipped.
    """

    def __init__(self, history: int = 10, first_step: float = 0.05) -> None:
        self.pairs: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=history)
        self.first_step = first_step

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        if not self.pairs:
            return grad * (self.first_step / grad.abs().max().clamp(min=1e-30))
        q = grad.clone()
        alphas = []
        for s, y in reversed(self.pairs):
            a = (s @ q) / (y @ s)
            q -= a * y
            alphas.append(a)
        s, y = self.pairs[-1]
        r = q * ((s @ y) / (y @ y))
        for (s, y), a in zip(self.pairs, reversed(alphas), strict=True):
            b = (y @ r) / (y @ s)
            r += s * (a - b)
        return r

    def update(self, step: torch.Tensor, grad_old: torch.Tensor, grad_new: torch.Tensor) -> None:
        if step.numel() == 0:
            return
        y = grad_old - grad_new  # the change of the gradient of -ELBO
        if float(step @ y) > 1e-12 * float(step.norm() * y.norm()):
            self.pairs.append((step.clone(), y.clone()))


def relative_change(old: NewtonState, new: NewtonState) -> tuple[float, float]:
    """q90 over cells of the relative change of the median density, and of the posterior std of phi."""
    median = (torch.pow(10.0, new.mean - old.mean) - 1.0).abs().flatten()
    ratio = (new.variance.clamp(min=1e-300) / old.variance.clamp(min=1e-300)).sqrt()
    spread = (ratio - 1.0).abs().flatten()
    return float(np.quantile(median.cpu().numpy(), 0.9)), float(np.quantile(spread.cpu().numpy(), 0.9))


class NewtonOptimizer:
    """Outer steps from a starting point; each accepted step raises the exact ELBO.

    Parameters
    ----------
    problem : NewtonProblem
    theta, m, l_precision : torch.Tensor
        Starting point (float64), q whitened at theta.
    warmup : int
        Steps of q alone before theta moves: far from q's optimum the theta gradient pulls the hyperparameters
        toward explaining the misfit of a q that is about to change anyway.
    likelihood : StarLikelihood, optional
        A likelihood with latent variables (distance nodes, outlier flags, t scales): their closed-form posteriors
        are updated at every accepted point and ``problem.stats`` replaced by the node stars' statistics, which
        raises the ELBO again (coordinate ascent; see :mod:`dustgp.likelihood`).

    Attributes
    ----------
    cell_moments : torch.Tensor, shape (5, n_columns, n_d)
        :func:`~dustgp.sightlines.cell_extinction_moments` at the current state (for posterior predictive checks).
    """

    #: fractions of the (hyperparameter, inducing location) steps tried, with a full natural-gradient step of q,
    #: before q alone; the second holds the locations, whose L-BFGS step is the one more often too long. Where
    #: both are refused, q alone is tried next, not shorter theta steps: on the Section 3 fits no shorter theta
    #: step was ever taken, while q's own step was to blame (docs: Design notes, "Where newton's steps go"); a
    #: theta step that was too long is shortened by the Levenberg damping of the next step (:meth:`_adapt`)
    THETA_TRIALS = ((1.0, 1.0), (1.0, 0.0))
    #: natural-gradient step lengths of q tried, as fractions of the longest allowed
    BETAS = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01)
    #: largest change of any hyperparameter in one step (c in dex; ln alpha, ln gamma). Longer steps, taken while q
    #: is still far from its optimum, send the hyperparameters of stiff skies (an empty foreground, tiny sigmas) far
    #: from theirs, and such fits stopped converging (docs: Design notes, "Where newton's steps go")
    MAX_HYPER_STEP = 0.3
    #: largest change of any inducing location coordinate in one step (length units), the trust radius's ceiling
    MAX_LOCATION_STEP = 0.3
    #: below this trust radius the inducing locations are held for a step while it doubles. Once the stars pin the
    #: map, the ELBO is so stiff in the locations that steps this short are refused and gain next to nothing
    #: where taken, each refusal at the price of an evaluation of the ELBO (docs: Design notes, "Where newton's
    #: steps go"). The n-th refusal in a row shrinks the radius by 4^(2^(n-1)) (at most 4^32), so the locations
    #: are held for 2, 4, 8, ... steps: an exponential back-off
    MIN_LOCATION_STEP = 0.01
    #: the step controls that checkpoints keep and the training grid's fit takes over from the coarse stage
    STEP_CONTROLS = ("damping", "location_radius", "curvature_scale", "location_refusals")
    #: bounds of the secant ratio ρ by which the Fisher information is scaled (:meth:`secant_ratio`)
    SECANT_BOUNDS = (1.0, 10.0)
    #: largest change of the mean of phi in any cell in one step, dex: Newton steps on a log-normal model
    #: overshoot where the model is far below the data (the curvature there is that of a tiny density)
    MAX_PHI_STEP = 1.0

    def __init__(
        self,
        problem: NewtonProblem,
        theta: torch.Tensor,
        m: torch.Tensor,
        l_precision: torch.Tensor,
        *,
        warmup: int = 2,
        likelihood: StarLikelihood | None = None,
    ) -> None:
        self.problem = problem
        self.warmup = warmup
        self.likelihood = likelihood
        self.lbfgs = LBFGS()  # inducing locations
        self.damping = 0.0  # Levenberg damping of the Fisher step (relative to its diagonal)
        self.location_radius = self.MAX_LOCATION_STEP  # largest step of any inducing location coordinate
        self.curvature_scale = 1.0  # ρ: the Fisher information is scaled by it (secant_ratio)
        self.location_refusals = 0  # location steps refused in a row (the back-off of MIN_LOCATION_STEP)
        self.steps = 0
        self.full_step = False  # the last step was the first trial at an uncapped natural-gradient step
        self.cell_moments: torch.Tensor | None = None
        state = evaluate(problem, Geometry.at(problem, theta), m, l_precision)
        self.state = self._refresh(state).with_gradients(problem)

    def _refresh(self, state: NewtonState) -> NewtonState:
        """Keep the cell moments of ``state``; update the latent posteriors there and re-evaluate its ELBO."""
        cache = state._cache
        mean, cov = cache["mean_leaf"], cache["cov_leaf"]
        with torch.no_grad():
            self.cell_moments = cell_extinction_moments(mean.detach(), cov.detach(), self.problem.stats.path_lengths)
        if self.likelihood is None or self.likelihood.static:
            return state
        self.likelihood.update(self.cell_moments)
        self.problem.use_statistics(self.likelihood, self.cell_moments)
        with torch.enable_grad():
            ell = self.problem.expected_log_likelihood(mean, cov)
        cache["ell"] = ell
        state.expected_log_likelihood = float(ell.detach())
        state.elbo = state.expected_log_likelihood - state.kl
        return state

    def _beta_max(self, state: NewtonState) -> float:
        geo = state.geometry
        step = precision_solve(state.l_precision, state.grad_m)
        change = (geo.k @ (geo.x_inv.T @ step)).abs().max()
        return min(1.0, self.MAX_PHI_STEP / float(change.clamp(min=1e-300)))

    def _theta_directions(self, state: NewtonState) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps for the hyperparameters (Fisher scoring, Levenberg-damped) and for the inducing locations (L-BFGS).

        Their curvatures differ by orders of magnitude (five global numbers against M local points); each step is
        capped on its own (``MAX_HYPER_STEP``, and the locations' trust radius).
        """
        grad, fisher = state.grad_theta, self.curvature_scale * state.fisher
        scale = fisher.diagonal()
        damped = fisher + torch.diag(self.damping * scale + 1e-9 * scale.max().clamp(min=1.0))  # q = prior: I = 0
        hyper = torch.linalg.solve(damped, grad[:5])
        hyper *= min(1.0, self.MAX_HYPER_STEP / float(hyper.abs().max().clamp(min=1e-300)))
        locations = grad[5:]
        if locations.numel():
            locations = self.lbfgs.direction(grad[5:])
            if float(locations @ grad[5:]) <= 0.0:  # q moved under the curvature pairs: start afresh
                self.lbfgs.pairs.clear()
                locations = self.lbfgs.direction(grad[5:])
            locations *= min(1.0, self.location_radius / float(locations.abs().max().clamp(min=1e-300)))
        return hyper, locations

    def _adapt(self, hyper_fraction: float, location_fraction: float, held: bool) -> None:
        """Levenberg damping of the Fisher step and the locations' trust radius, after a step that moved theta.

        A full hyperparameter step accepted halves the damping (down to none); one cut short quadruples it. The
        locations' radius doubles after a full step (up to ``MAX_LOCATION_STEP``) or one that ``held`` them below
        ``MIN_LOCATION_STEP``, shrinks when the trial that held them was taken (they were to blame: fourfold, and
        more for each refusal in a row, see ``MIN_LOCATION_STEP``) and halves when both were cut short.
        """
        if hyper_fraction == 1.0:
            self.damping = self.damping / 2.0 if self.damping > 0.05 else 0.0
        else:
            self.damping = max(1.0, 4.0 * self.damping)
        if location_fraction == 1.0 and not held:
            self.location_refusals = 0
        if held or location_fraction == 1.0:
            self.location_radius = min(self.MAX_LOCATION_STEP, 2.0 * self.location_radius)
        elif hyper_fraction == 1.0:
            self.location_refusals += 1
            self.location_radius *= 0.25 ** (2 ** min(int(self.location_refusals) - 1, 5))
        else:
            self.location_radius *= 0.5

    def secant_ratio(self, old: NewtonState, new: NewtonState) -> float:
        """``ρ = sᵀy / sᵀ I s`` over the hyperparameters for the accepted step ``s`` from ``old`` to ``new``.

        ``y`` is the change of the gradient of -ELBO, so ρ compares the curvature met along the step with the one
        Fisher scoring assumed (the scaling of a quasi-Newton matrix by one secant pair, Nocedal & Wright 2006,
        §6.1). The pseudo-data's Fisher information leaves out how the conditional variance of the cells, which the
        stars see, depends on theta, and q moves with theta, so it underestimates the curvature and the unscaled
        steps overshoot (docs: Design notes, "Where newton's steps go"). ρ is held to ``SECANT_BOUNDS``: at least
        1 (never a step longer than Fisher scoring's) and at most 10 (the first steps, with q far from its
        optimum, meet far more). Unchanged when the step has no Fisher curvature to compare with.
        """
        low, high = self.SECANT_BOUNDS
        s = (new.theta - old.theta)[:5]
        assumed = float(s @ old.fisher @ s)
        if not assumed > 0.0:
            return self.curvature_scale
        met = float(s @ (old.grad_theta[:5] - new.grad_theta[:5]))
        return min(max(met / assumed, low), high)

    def step(self) -> tuple[NewtonState, NewtonState] | None:
        """One outer step: ``(before, after)``, or None when no trial step raised the ELBO."""
        old = self.state
        beta_max = self._beta_max(old)
        trials: list[tuple[float, float, float]] = []
        moves_theta = self.problem.learn_hyperparameters and self.steps >= self.warmup
        held = False
        if moves_theta:
            hyper, locations = self._theta_directions(old)
            held = locations.numel() > 0 and self.location_radius < self.MIN_LOCATION_STEP
            if held:
                locations = torch.zeros_like(locations)
            moves_z = locations.numel() > 0 and not held
            trials += [(beta_max, fh, fz) for fh, fz in self.THETA_TRIALS if moves_z or fz == fh]
        trials += [(beta_max * beta, 0.0, 0.0) for beta in self.BETAS]
        for index, (beta, fh, fz) in enumerate(trials):
            q = propose(old, beta, self.problem)
            if q is None:
                continue
            try:
                geometry = old.geometry
                if fh or fz:
                    geometry = Geometry.at(self.problem, old.theta + torch.cat([fh * hyper, fz * locations]))
                    q = transport(old.geometry, geometry, *q)
                candidate = evaluate(self.problem, geometry, *q)
            except torch.linalg.LinAlgError:
                continue
            if math.isfinite(candidate.elbo) and candidate.elbo > old.elbo:
                self._refresh(candidate).with_gradients(self.problem)
                if fh:
                    self.curvature_scale = self.secant_ratio(old, candidate)
                if fh or fz:
                    self.lbfgs.update((candidate.theta - old.theta)[5:], old.grad_theta[5:], candidate.grad_theta[5:])
                if moves_theta and (fh or beta == beta_max):  # q alone at the full step: theta was to blame
                    self._adapt(fh, fz, held)
                self.state = candidate
                self.steps += 1
                self.full_step = index == 0 and beta_max == 1.0
                return old, candidate
        return None


class NewtonRunner:
    """The default: natural-gradient steps on q(v), Fisher scoring and L-BFGS on theta (see the module docstring).

    Stop rule ``"map"`` (:class:`~dustgp.fitting.stopping.StepConvergence`): the median density changed by less
    than ``step_tol`` and the posterior spread of phi by less than
    :data:`~dustgp.fitting.stopping.SPREAD_TOLERANCE` × ``step_tol`` (q90 over the training cells, relative), and
    the ELBO by less than max(1, 0.01 per 1000 stars) nats, at ``patience`` steps in a row, or at the end of a
    contraction of full steps; a step that cannot raise the ELBO any more also ends the fit converged.
    ``tolerance`` multiplies the tolerances (the coarse stage of :func:`dustgp.fit` stops at a looser one).
    ``"elbo"``: the paper's rule over the last ``elbo_window`` steps.

    ``after_coarse``: the model comes from :func:`dustgp.fit`'s coarse stage. Its inducing locations are held (on
    the training grid the ELBO is so stiff in them that its steps there moved no coordinate by 10⁻⁴ length units
    on the Section 3 fits, while each refused trial cost an evaluation of the ELBO), and q alone takes one step,
    not ``config.warmup``: it starts near its optimum (docs: Design notes, "Where newton's steps go").
    """

    def __init__(
        self,
        gp: DustGP,
        cells: torch.Tensor,
        stats: GaussianStatistics,
        grid: Grid,
        config: FitConfig,
        likelihood: StarLikelihood,
        *,
        tolerance: float = 1.0,
        after_coarse: bool = False,
    ) -> None:
        self.gp, self.config, self.likelihood = gp, config, likelihood
        self.marginal: torch.Tensor | None = None  # q(v)'s factor from the marginal likelihood at the final state
        learn_z = config.learn_inducing_locations and config.learn_hyperparameters and not after_coarse
        fixed = None if learn_z else gp.inducing_points.detach()
        learn, count = config.learn_hyperparameters, config.missing_information == "objective"
        self.problem = NewtonProblem.build(
            cells, grid.n_d, stats, fixed_z=fixed, learn_hyperparameters=learn, count_missing=count
        )
        theta, m, l_precision = newton_start(gp, self.problem)
        warmup = min(config.warmup, 1) if after_coarse else config.warmup
        self.optimizer = NewtonOptimizer(self.problem, theta, m, l_precision, warmup=warmup, likelihood=likelihood)
        self.rule = StepConvergence(
            tolerance * config.step_tol, tolerance * max(1.0, 1e-5 * stats.n_stars), config.patience
        )

    def step(self, iteration: int, losses: list[float]) -> tuple[float, float | None, str | None]:
        self.marginal = None
        moved = self.optimizer.step()
        state = self.optimizer.state
        if moved is None:
            return -state.elbo, 0.0, "converged"
        old, new = moved
        median, spread = relative_change(old, new)
        counts = self.optimizer.steps > self.optimizer.warmup
        holds = self.rule.update(median, spread, new.elbo - old.elbo, full=self.optimizer.full_step, counts=counts)
        stop = None
        if self.config.stop == "map" and holds:
            stop = "converged"
        elif self.config.stop == "elbo" and elbo_rule_fires([*losses, -new.elbo], self.config):
            stop = "elbo rule"
        return -new.elbo, median, stop

    def store(self) -> None:
        newton_store(self.gp, self.problem, self.optimizer.state)
        if self.marginal is not None:  # set at this state by fitting.missing_information
            self.gp.set_marginal(self.marginal)

    def adopt_step_controls(self, other: NewtonRunner) -> None:
        """Start with the step controls that ``other`` (the coarse stage) ended with.

        The damping and the secant ratio describe the objective near its optimum, which the coarse grid shares with
        the training grid: started afresh, the training grid's first theta step overshoots (ρ back at 1). The
        locations' controls come along unused: after the coarse stage the training grid holds the locations
        (``after_coarse``).
        """
        for name in NewtonOptimizer.STEP_CONTROLS:
            setattr(self.optimizer, name, getattr(other.optimizer, name))

    def optimizer_state(self) -> dict[str, Any]:
        """Step count, stop-rule streak, the L-BFGS memory and the step controls (plain values, for weights-only
        checkpoints).

        Without them a resumed fit warms up again (q alone) and starts L-BFGS from a gradient step: measured on a
        300-star, M = 20 fit resumed after 4 of 8 steps, the map then differed from the uninterrupted one by a
        factor of up to 7; with them, by rounding.
        """
        return {
            "steps": self.optimizer.steps,
            **self.rule.state(),
            "lbfgs": [[[s.cpu(), y.cpu()] for s, y in self.optimizer.lbfgs.pairs]],
            **{name: getattr(self.optimizer, name) for name in NewtonOptimizer.STEP_CONTROLS},
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`optimizer_state` (a checkpoint without it starts a fresh memory and warm-up)."""
        if "lbfgs" not in state:
            return
        self.optimizer.steps = int(state["steps"])
        self.rule.restore(state)
        device = self.problem.cells.device
        memory = self.optimizer.lbfgs.pairs
        memory.clear()
        # the inducing locations' memory is the last (checkpoints before Fisher scoring also held the
        # hyperparameters' L-BFGS memory, first)
        memory.extend((s.to(device), y.to(device)) for s, y in state["lbfgs"][-1])
        for name in NewtonOptimizer.STEP_CONTROLS:  # older checkpoints lack some: those start afresh
            if name in state:
                setattr(self.optimizer, name, float(state[name]))

    def predictive(self) -> dict[str, np.ndarray]:
        """From the exact moments of the model extinction under the final q (with the conditional covariance)."""
        return self.likelihood.predictive(self.optimizer.cell_moments)


def newton_start(gp: DustGP, problem: NewtonProblem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat theta, m and the Cholesky factor of S⁻¹ from the model's parameters, on the problem's device."""
    device = problem.cells.device
    with torch.no_grad():
        h = gp.hyperparameters()
        gamma = torch.as_tensor(h["length_scale_pc"], dtype=DTYPE) / float(gp.length_unit)
        z = None if problem.fixed_z is not None else gp.inducing_points.detach().cpu()
        theta = pack(h["mean_log10_density"], h["scale_dex2"], gamma, z).to(device)
        m = gp.variational_mean.detach().to(device=device, dtype=DTYPE).clone()
        l_s = gp.variational_scale_tril().detach().to(device=device, dtype=DTYPE)
        eye = torch.eye(l_s.shape[0], dtype=DTYPE, device=device)
        l_s_inv = torch.linalg.solve_triangular(l_s, eye, upper=False)
        l_precision = torch.linalg.cholesky(l_s_inv.T @ l_s_inv)
    return theta, m, l_precision


@torch.no_grad()
def newton_store(gp: DustGP, problem: NewtonProblem, state: NewtonState) -> None:
    c, alpha, gamma, z = problem.unpack(state.theta)
    gp.mean_module.constant.fill_(float(c))
    gp.covar_module.outputscale = alpha.to(gp.length_unit.dtype)
    gp.covar_module.base_kernel.lengthscale = gamma.to(gp.length_unit.dtype)
    if problem.fixed_z is None:
        gp.inducing_points.copy_(z)
    covariance = torch.cholesky_inverse(state.l_precision)
    gp.set_variational(state.m, torch.linalg.cholesky(0.5 * (covariance + covariance.T)))
