"""The paper's scheme: Pyro SVI with Monte Carlo ELBO gradients (:mod:`dustgp.fitting.objective`) and AdamW.

Optimiser groups come from the model's roles (:meth:`dustgp.model.DustGP.parameter_groups`): the off-diagonal of L_q
takes ``lr_covariance``, every other parameter ``lr`` (see :class:`~dustgp.fitting.FitConfig`, Notes). AdamW's
weight decay pulls parameters toward zero; on the inducing locations that means toward the Sun, so decay applies
to the variational mean and the off-diagonal of L_q only (and is 0 by default); on log diag(L_q) it would pull the
posterior scales toward the prior's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.params.param_store import normalize_param_name

from ..grid import Grid
from ..likelihood import StarLikelihood
from ..model import DustGP
from ..sightlines import GaussianStatistics
from .config import FitConfig
from .objective import PYRO_MODULE, Elbo
from .stopping import MapConvergence, elbo_rule_fires

__all__ = ["PREDICTIVE_DRAWS", "SviRunner", "optimizer_args", "with_learning_rates"]

#: Monte Carlo draws of the map behind SVI's posterior predictive checks (PIT error ≲ 1/sqrt(draws) of its spread)
PREDICTIVE_DRAWS = 128
#: Roles (:meth:`DustGP.parameter_groups`) that take ``lr_covariance`` rather than ``lr``, and weight decay.
_SLOW_ROLES = ("variational_lower",)
_DECAYED_ROLES = ("variational_mean", "variational_lower")


def optimizer_args(config: FitConfig, gp: DustGP) -> Callable[[str], dict[str, float]]:
    """AdamW's arguments per parameter, from its name in Pyro's parameter store (``"dustgp$$$variational_mean"``,
    or normalised, ``"dustgp.variational_mean"``).

    Raises
    ------
    KeyError
        A name that is not one of the model's parameters.
    """
    role = {f"{PYRO_MODULE}.{name}": group for group, names in gp.parameter_groups().items() for name in names}

    def args(name: str) -> dict[str, float]:
        group = role[normalize_param_name(name)]
        lr = config.lr_covariance if group in _SLOW_ROLES else config.lr
        return {"lr": lr, "weight_decay": config.weight_decay if group in _DECAYED_ROLES else 0.0}

    return args


def with_learning_rates(state: dict[str, Any], config: FitConfig, gp: DustGP) -> dict[str, Any]:
    """A checkpoint's optimiser state with this fit's learning rates and weight decay.

    Loading an optimiser state restores the rates it was saved with; without this, rates given as options to a
    resumed fit would be silently ignored.
    """
    args = optimizer_args(config, gp)
    for name, optim_state in state.items():
        for group in optim_state["param_groups"]:
            group.update(args(name))
    return state


def _set_learning_rates(
    optimizer: pyro.optim.PyroOptim, initial: Callable[[str], dict[str, float]], config: FitConfig, iteration: int
) -> None:
    if config.lr_decay == 1.0:
        return  # constant rates: the optimisers already hold them
    factor = config.lr_decay ** (min(iteration, config.lr_decay_iterations) / config.lr_decay_iterations)
    store = pyro.get_param_store()
    for param, optim in optimizer.optim_objs.items():
        start = initial(store.param_name(param))["lr"]
        for group in optim.param_groups:
            group["lr"] = start * factor


class SviRunner:
    """The paper's scheme: Pyro SVI with Monte Carlo ELBO gradients and AdamW."""

    def __init__(
        self,
        gp: DustGP,
        cells: torch.Tensor,
        stats: GaussianStatistics,
        grid: Grid,
        config: FitConfig,
        previous: dict[str, Any] | None,
        likelihood: StarLikelihood,
    ) -> None:
        self.config, self.likelihood = config, likelihood
        self.objective = Elbo(gp, cells, stats, grid, None if likelihood.static else likelihood)
        # Pyro's parameter store is global: fit() runs this within a scope of its own, so the parameters
        # registered here never meet (or clear) a caller's
        self.args = optimizer_args(config, gp)
        self.optimizer = pyro.optim.AdamW(self.args)
        if previous:
            self.optimizer.set_state(with_learning_rates(previous["optimizer"], config, gp))
            torch.set_rng_state(previous["rng"])
        elbo = TraceMeanField_ELBO(num_particles=config.particles, vectorize_particles=True, max_plate_nesting=0)
        self.svi = SVI(self.objective.model, self.objective.guide, self.optimizer, loss=elbo)
        self.rule = MapConvergence(config)

    def step(self, iteration: int, losses: list[float]) -> tuple[float, float | None, str | None]:
        config = self.config
        _set_learning_rates(self.optimizer, self.args, config, iteration)
        loss = self.svi.step()
        change = None
        if iteration % config.check_every == 0:
            change = self.rule.update(iteration, self.objective.mean_log_density())
        stop = None
        if config.stop == "map" and self.rule.converged:
            stop = "map converged"
        elif config.stop == "elbo" and elbo_rule_fires([*losses, loss], config):
            stop = "elbo rule"
        return loss, change, stop

    def store(self) -> None:
        """Nothing to do: SVI trains the model's own parameters."""

    def optimizer_state(self) -> dict[str, Any]:
        """AdamW's state per parameter, keyed by Pyro parameter name."""
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
