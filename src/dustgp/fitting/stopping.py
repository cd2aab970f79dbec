"""When a fit stops: the stop rules, and Ctrl-C or SIGTERM ending it after the step under way.

Stopping. The paper stops when the ELBO varies by less than 1% over 10 iterations (``stop="elbo"``). On the
Section 3 problem that fires after ~120 iterations while the map keeps improving for 1000+ (docs: Design notes), so
the default (``stop="map"``) watches the map itself: every ``check_every`` iterations it evaluates the posterior
mean density on the training cells and stops once the 90th percentile of ``|rho_now / rho_then - 1|`` over the
last ``window`` iterations has stayed below ``tol`` for ``patience`` checks in a row. With constant learning
rates that change levels off at the Monte Carlo noise (a few per cent) while the map still improves; how the
errors at which each ``tol`` fires were measured is in the docs (Design notes, "Stopping"). The second-order
method has a rule of its own on its exact steps (:class:`dustgp.fitting.newton.NewtonRunner`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections import deque
from typing import Any

import numpy as np
import torch

from .config import FitConfig

__all__ = [
    "CONVERGED",
    "INTERRUPTED",
    "SPREAD_TOLERANCE",
    "MapConvergence",
    "StepConvergence",
    "StopAtStepEnd",
    "elbo_rule_fires",
]

logger = logging.getLogger(__name__)

#: ``Fit.stopped_by`` values that mean the stop rule was met
CONVERGED = ("converged", "map converged", "elbo rule")
#: ``Fit.stopped_by`` of a fit stopped from outside: Ctrl-C, or SIGTERM (a batch scheduler's time limit)
INTERRUPTED = ("interrupted", "terminated")

#: The newton stop rule's tolerance on the change of the posterior spread of phi per step, in units of
#: ``step_tol``: 2% at the default. A 16-84% band drawn from the default 200 posterior samples has ends uncertain
#: by ~10% of its half-width in each cell (sqrt(0.16·0.84/200) / φ(1) σ, φ the normal density), so the spread need
#: not settle to 1% per step (the previous 5 × ``step_tol``), which cost 2-3 quiet steps of the training grid
#: (docs: Design notes, "Where newton's steps go")
SPREAD_TOLERANCE = 10.0

#: ``Fit.stopped_by`` of a fit ended by each signal
_STOP_SIGNALS = {signal.SIGTERM: "terminated", signal.SIGINT: "interrupted"}


class MapConvergence:
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


class StepConvergence:
    """The newton stop rule on its exact steps: the map, its spread and the ELBO no longer move.

    A step passes when the q90 over cells of the relative change of the median density is below ``tol``, that of
    the posterior spread of phi below ``SPREAD_TOLERANCE`` × ``tol``, and the ELBO rose by less than
    ``elbo_tol`` nats. The rule holds after ``patience`` passing steps in a row, or sooner, at a passing step that
    ends a contraction: each of the three changes shrank at each of the last two full steps, and the geometric
    tail those ratios bound, ``x r / (1 - r)`` for the last change x and the larger ratio r, is below its
    tolerance. The changes still to come then sum to less than one tolerance, where ``patience`` asks for
    ``patience - 1`` more steps, each within one. Full steps are the natural-gradient and theta steps as proposed,
    not shortened: a short step's small change says nothing of the distance left. Steps of a warm-up never pass.
    On the Section 3 training grid, once q is near its optimum, the changes shrink by factors of 0.2-0.6 per
    step, and the tail rule ends those fits two steps before ``patience`` = 3 would (docs: Design notes, "Where
    newton's steps go").
    """

    def __init__(self, tol: float, elbo_tol: float, patience: int) -> None:
        self.tolerances = (tol, SPREAD_TOLERANCE * tol, elbo_tol)
        self.patience = patience
        self.passed = 0
        self.recent: deque[tuple[float, float, float]] = deque(maxlen=3)  # changes of the last full steps

    def update(self, median: float, spread: float, elbo_gain: float, *, full: bool, counts: bool = True) -> bool:
        """Record a step's changes (``counts``: it is past the warm-up); True once the rule holds."""
        changes = (median, spread, elbo_gain)
        small = all(x < tol for x, tol in zip(changes, self.tolerances, strict=True))
        self.passed = self.passed + 1 if small and counts else 0
        if full and counts:
            self.recent.append(changes)
        else:
            self.recent.clear()
        return self.passed >= self.patience or (self.passed > 0 and self.tail_below_tolerance)

    @property
    def tail_below_tolerance(self) -> bool:
        """The last three full steps' changes contract, and their geometric tails are below the tolerances."""
        if len(self.recent) < 3:
            return False
        for first, second, last, tol in zip(*self.recent, self.tolerances, strict=True):
            if not (second < first and last < second):
                return False
            ratio = max(second / first, last / second)
            if last * ratio / (1.0 - ratio) >= tol:
                return False
        return True

    def state(self) -> dict[str, Any]:
        return {"passed": self.passed, "recent": [list(r) for r in self.recent]}

    def restore(self, state: dict[str, Any]) -> None:
        self.passed = int(state["passed"])
        self.recent.clear()
        self.recent.extend(tuple(float(x) for x in r) for r in state.get("recent", []))


def elbo_rule_fires(losses: list[float], config: FitConfig) -> bool:
    if len(losses) < config.elbo_window:
        return False
    recent = np.asarray(losses[-config.elbo_window :])
    return float(np.ptp(recent) / abs(recent.mean())) < config.elbo_tol


class StopAtStepEnd:
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

    def __enter__(self) -> StopAtStepEnd:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in _STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
