"""Training: maximise the ELBO over the variational posterior, the inducing points and the five hyperparameters.

Two methods share the data preparation, the model, checkpoints, progress and Ctrl-C/SIGTERM handling here. The
default, ``method="newton"``, maximises the ELBO in closed form with second-order steps
(:mod:`dustgp.fitting.newton`); ``method="svi"`` is the paper's scheme, Pyro SVI with Monte Carlo gradients
(:mod:`dustgp.fitting.svi`). Stop rules are in :mod:`dustgp.fitting.stopping`.

Coarse start (newton). Most of a newton fit's steps go to the hyperparameters travelling from their start to the
optimum along a ridge of nearly equal ELBO (the scale factor against the scale lengths), with q(v) following; the
number of those steps hardly depends on the size of the problem. So a newton fit first runs to its stop rule on
the training grid with cells twice as large on every axis (:func:`coarse_start_grid`: 8× fewer cells, a step
costing about half as much, the M × M work left), with the same inducing points. Its hyperparameters, inducing
locations and q(v) — defined on the inducing points, not on the grid — are where the training grid's fit starts,
which then needs a few steps, with one step of q alone first, and holds the locations (the ELBO there is too
stiff in them to move them). The coarse cells must still resolve the map: with fewer than two cells per inducing
point there is no coarse stage (docs: Design notes, "Where newton's steps go").

A fit changes no global state it did not create: torch's global random state is forked for the fit and seeded
with ``FitConfig.seed`` inside (Pyro draws its Monte Carlo samples from it), and the fit's parameters live in a
Pyro parameter-store scope of their own, so a caller's draws and Pyro parameters are as they were.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from ..catalog import Catalog
from ..grid import Grid
from ..likelihood import StarLikelihood
from ..model import DustGP
from ..sightlines import Sightlines
from .checkpoint import data_fingerprint, load_checkpoint, model_from_state, write_checkpoint
from .config import FitConfig, FitError
from .foreground import without_empty_foreground
from .layout import inducing_init
from .missing_information import store_marginal_covariance
from .newton import NewtonRunner
from .record import Fit, checkpoint_payload
from .stars import star_checks, star_distances, star_likelihood
from .stopping import CONVERGED, INTERRUPTED, StopAtStepEnd
from .svi import SviRunner

__all__ = ["fit"]

logger = logging.getLogger(__name__)


class Runner(Protocol):
    """One way of maximising the ELBO (:class:`~dustgp.fitting.svi.SviRunner`,
    :class:`~dustgp.fitting.newton.NewtonRunner`), stepped by :func:`fit`'s loop (progress, checkpoints, Ctrl-C)."""

    def step(self, iteration: int, losses: list[float]) -> tuple[float, float | None, str | None]:
        """Advance once: ``(-ELBO, map change or None, stop reason or None)``."""
        ...

    def store(self) -> None:
        """Write the current parameters into the model (for checkpoints and the result)."""
        ...

    def optimizer_state(self) -> dict[str, Any]:
        """What a resumed fit needs of the optimiser (plain tensors and numbers)."""
        ...

    def predictive(self) -> dict[str, np.ndarray] | None:
        """Posterior predictive checks per star at the current parameters (see StarLikelihood.predictive)."""
        ...


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

    Notes
    -----
    The caller's global state is left as it was: torch's random state is forked for the fit and seeded there with
    ``seed`` (so the same seed gives the same fit whatever was drawn before), and the fit's Pyro parameters live in
    a parameter-store scope of their own.
    """
    previous = load_checkpoint(resume) if resume is not None else None
    base = FitConfig.from_dict(previous["config"]) if previous and config is None else (config or FitConfig())
    config = base.updated(**options) if options else base
    if previous:
        saved = FitConfig.from_dict(previous["config"])
        for name in ("method", "inducing_points", "learn_inducing_locations"):
            if getattr(saved, name) != getattr(config, name):
                raise FitError(
                    f"checkpoint {resume} was made with {name}={getattr(saved, name)!r}, "
                    f"not {getattr(config, name)!r}: a resumed fit continues the same model"
                )
    newton = config.method == "newton"
    # the second-order method computes in float64 (see dustgp.fitting.exact_elbo); SVI in the configured dtype
    dtype, device = (torch.float64 if newton else config.torch_dtype), torch.device(config.device)

    if previous and "foreground" not in previous["config"]:
        config = dataclasses.replace(config, foreground="ghost")  # made before the check: resumed as it was fitted
    sightlines = Sightlines.from_positions(grid, catalog.l, catalog.b, catalog.distance)
    foreground = None
    if config.foreground == "auto":
        grid, sightlines, foreground = without_empty_foreground(grid, catalog, sightlines)
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
    # the stars used, selected once: the distance nodes the likelihood tabulates (parallax posteriors, when the
    # catalogue has not got them for this k already) stay with them for the coarse stage
    on_grid = catalog.select(used)
    fingerprint = data_fingerprint(on_grid, grid)
    if previous and previous.get("data_fingerprint", fingerprint) != fingerprint:
        raise FitError(
            f"checkpoint {resume} was fitted to other stars or another grid (its data fingerprint differs): "
            "resume with the catalogue and grid it was made with, or start a new fit"
        )
    likelihood = star_likelihood(on_grid, sightlines, config, dtype=dtype, device=device)
    if previous and "likelihood" in previous:
        # where the last update of the latent posteriors started (older checkpoints: where it ended); a newton fit
        # repeats that update at the restored q, so the resumed fit takes the uninterrupted one's steps
        saved = previous["likelihood"]
        start = saved.get("update_start", saved)
        likelihood.outlier_fraction = float(start["outlier_fraction"])
        likelihood.scatter = tuple(float(v) for v in start.get("scatter", likelihood.scatter))
    stats = likelihood.statistics()
    cells_pc = torch.as_tensor(grid.cell_centers_xyz(), dtype=dtype, device=device)

    if previous and Grid.from_dict(previous["grid"]) != grid:
        raise FitError(f"checkpoint {resume} was made on another grid: {Grid.from_dict(previous['grid'])!r}")
    gp = model_from_state(previous["model"], config) if previous else _initial_model(on_grid, grid, config, dtype)
    gp = gp.to(device)
    result = Fit(gp, grid, config, np.empty(0), np.empty((0, 2)), 0, "", 0.0, stars)
    result.data_fingerprint = fingerprint
    result.likelihood = likelihood
    result.star_distances = star_distances(sightlines, catalog.distance[used], grid)
    result.foreground = foreground.to_dict() if foreground is not None else {}
    # Monte Carlo draws come from torch's global random state (Pyro offers no generator argument), and Pyro keeps
    # parameters in a global store: the fit forks the one and scopes the other, leaving the caller's as they were
    with _private_random_state(config.seed, device), pyro.get_param_store().scope():
        cells = cells_pc / gp.length_unit
        runner: Runner
        started = time.perf_counter()  # the coarse start and the runner's set-up (an ELBO evaluation) count
        if newton:
            coarse_runner = None
            # the coarse stage learns the inducing locations; a fit resumed on the training grid had one
            coarse = coarse_start_grid(grid, config) is not None
            if previous is None and coarse:
                coarse_runner = _coarse_start(gp, on_grid, grid, config, likelihood, progress=progress)
                stats = likelihood.statistics()  # with what the coarse stage learned of the noise model
            runner = NewtonRunner(gp, cells, stats, grid, config, likelihood, after_coarse=coarse)
            if coarse_runner is not None:
                runner.adopt_step_controls(coarse_runner)
            if previous:
                runner.restore(previous["optimizer"])
        else:
            runner = SviRunner(gp, cells, stats, grid, config, previous, likelihood)
        result.seconds = time.perf_counter() - started
        result = _train(runner, result, previous, checkpoint=checkpoint, progress=progress)
        result.star_checks = star_checks(on_grid, likelihood, runner.predictive())
    stopped_by = result.stopped_by
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
    if result.prior_warning:
        logger.warning("%s", result.prior_warning)
    logger.info("fit: %s", result.summary().replace("\n", "; "))
    return result


def _train(
    runner: Runner,
    result: Fit,
    previous: dict[str, Any] | None,
    *,
    checkpoint: str | os.PathLike | None,
    progress: bool,
) -> Fit:
    """The training loop: steps, progress, checkpoints, stop rules and signals; ``result`` filled in and returned."""
    gp, config = result.model, result.config
    newton = config.method == "newton"
    losses: list[float] = list(previous["losses"].tolist()) if previous else []
    changes: list[tuple[int, float]] = [tuple(r) for r in previous["map_changes"].tolist()] if previous else []
    # a coarse start's time and the runner's set-up count
    seconds = (float(previous["seconds"]) if previous else 0.0) + result.seconds
    start_iteration = len(losses)
    stopped_by = "max_iterations"
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
            write_checkpoint(
                checkpoint, checkpoint_payload(snapshot(state), runner.optimizer_state(), torch.get_rng_state())
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
    signals = StopAtStepEnd()
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
    if isinstance(runner, NewtonRunner) and config.missing_information is True and stopped_by not in INTERRUPTED:
        store_marginal_covariance(runner)  # before the last checkpoint, which keeps it for later maps
    save(stopped_by)
    result = snapshot(stopped_by)
    return result


#: The coarse stage stops at this multiple of the stop rule's tolerances: its optimum is not the training grid's, and
#: its last steps under the full tolerances move the hyperparameters far less than the two optima differ (docs:
#: Design notes, "Where newton's steps go").
COARSE_TOLERANCE = 5.0


def coarse_start_grid(grid: Grid, config: FitConfig) -> Grid | None:
    """The grid of a newton fit's coarse stage (cells twice as large on every axis), or None when it has none.

    None unless ``config.coarse_start`` and the hyperparameters are learned, and unless the coarse grid has at
    least two cells per inducing point: with fewer, the M × M work dominates a step, which then costs nearly as
    much on the coarse grid as on the training grid, and the coarse fit can end far from the training grid's
    optimum (docs: Design notes, "Where newton's steps go").
    """
    if not (config.method == "newton" and config.coarse_start and config.learn_hyperparameters):
        return None
    coarse = grid.refined(0.5)
    if coarse.n_cells < 2 * config.inducing_points or coarse.n_cells >= grid.n_cells:
        return None
    return coarse


def _coarse_start(
    gp: DustGP, catalog: Catalog, grid: Grid, config: FitConfig, likelihood: StarLikelihood, *, progress: bool
) -> NewtonRunner:
    """Fit ``gp`` on :func:`coarse_start_grid` to its stop rule; its runner.

    The hyperparameters, inducing locations and q(v) it ends with are the training grid's starting point (q(v) is
    defined on the inducing points, not on the grid), and ``likelihood`` takes its learned noise parameters. The
    steps of this stage are not among the fit's losses (another objective) and are not checkpointed. ``catalog``
    holds the stars of the training grid's likelihood: its selection keeps their distance nodes (no new table).
    """
    started = time.perf_counter()
    coarse = coarse_start_grid(grid, config)
    assert coarse is not None
    sightlines = Sightlines.from_positions(coarse, catalog.l, catalog.b, catalog.distance)
    stage_likelihood = star_likelihood(
        catalog.select(sightlines.star_index),
        sightlines,
        config,
        dtype=torch.float64,
        device=torch.device(config.device),
    )
    cells = torch.as_tensor(coarse.cell_centers_xyz(), dtype=torch.float64, device=config.device) / gp.length_unit
    stats = stage_likelihood.statistics()
    runner = NewtonRunner(gp, cells, stats, coarse, config, stage_likelihood, tolerance=COARSE_TOLERANCE)
    losses: list[float] = []
    stop = None
    with tqdm(total=config.max_iterations, disable=not progress, desc="fit (newton, coarse grid)", unit="step") as bar:
        while stop is None and len(losses) < config.max_iterations:
            loss, _, stop = runner.step(len(losses) + 1, losses)
            losses.append(loss)
            bar.set_postfix({"loss": f"{loss:.6g}"}, refresh=False)
            bar.update()
    runner.store()
    for name in ("outlier_fraction", "scatter"):  # the noise model's learned parameters, where it has them
        if hasattr(stage_likelihood, name):
            setattr(likelihood, name, getattr(stage_likelihood, name))
    seconds = time.perf_counter() - started
    logger.info(
        "coarse start: %d steps on %d cells in %.1f s (%s)",
        len(losses),
        coarse.n_cells,
        seconds,
        stop or "max_iterations",
    )
    return runner


def _initial_model(catalog: Catalog, grid: Grid, config: FitConfig, dtype: torch.dtype) -> DustGP:
    """The model before training: inducing points as ``config.inducing_layout`` lays them, the mean at log10 of the
    median ``A_i / d_i`` unless configured, q(v) = N(0, (initial_posterior_std)² I). ``catalog``: the stars used."""
    rng = np.random.default_rng(config.seed)
    a_over_d = catalog.extinction / catalog.distance
    mean = config.mean
    if mean is None:
        positive = a_over_d[a_over_d > 0]
        mean = float(np.log10(np.median(positive))) if positive.size else -3.0
    z = inducing_init(catalog, grid, config.inducing_points, rng, config.length_scale, config.inducing_layout)
    gp = DustGP(
        torch.as_tensor(z, dtype=dtype),
        mean=mean,
        scale=config.scale,
        length_scale=tuple(np.broadcast_to(config.length_scale, 3).tolist()),
        learn_inducing_locations=config.learn_inducing_locations,
    )
    with torch.no_grad():
        gp.variational_log_diag.fill_(math.log(config.initial_posterior_std))
    return gp


@contextlib.contextmanager
def _private_random_state(seed: int, device: torch.device) -> Iterator[None]:
    """Within the block, torch's CPU random state (and that of ``device`` when it is a CUDA device) is seeded with
    ``seed``; after it, the caller's state is back, as if the block had drawn nothing."""
    cuda = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


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


#: Roles (:meth:`DustGP.parameter_groups`) whose change means a fit learned from the stars: the hyperparameters and
#: the mean of q(v), which carry the data into the map's median. Inducing locations and q's covariance are left
#: out: in a float32 fit whose squared gradients overflow they still move by a step or two while the map stays
#: the prior's.
_LEARNING_ROLES = ("hyperparameters", "variational_mean")


def _parameter_values(gp: DustGP) -> dict[str, torch.Tensor]:
    """A float64 copy (on the CPU) of the hyperparameters and the mean of q(v) (``_LEARNING_ROLES``)."""
    groups = gp.parameter_groups()
    names = {name for role in _LEARNING_ROLES for name in groups[role]}
    return {name: p.detach().to("cpu", torch.float64, copy=True) for name, p in gp.named_parameters() if name in names}


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
