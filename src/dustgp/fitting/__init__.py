"""Training: the fit's configuration, its objectives, the update schemes, stop rules, the loop and the Fit record.

- :mod:`~dustgp.fitting.config`: :class:`FitConfig`, every knob of a fit, and :class:`FitError`.
- :mod:`~dustgp.fitting.objective`: the paper's ELBO as a Pyro program (model, guide, KL in closed form).
- :mod:`~dustgp.fitting.svi`: the paper's scheme, Pyro SVI with AdamW.
- :mod:`~dustgp.fitting.exact_elbo`: the ELBO in closed form that the second-order method maximises.
- :mod:`~dustgp.fitting.newton`: the second-order method (natural-gradient steps on q(v), Fisher scoring
  on the hyperparameters, L-BFGS on the inducing locations).
- :mod:`~dustgp.fitting.stopping`: stop rules, and Ctrl-C or SIGTERM ending a fit after its step.
- :mod:`~dustgp.fitting.layout`: where the inducing points start (spread by greedy conditional variance).
- :mod:`~dustgp.fitting.stars`: what a fit takes from its stars (likelihood, column distance ranges, per-star
  checks).
- :mod:`~dustgp.fitting.foreground`: whether the stars show the foreground empty (then no ghost cells).
- :mod:`~dustgp.fitting.loop`: :func:`fit`, the training loop.
- :mod:`~dustgp.fitting.record`: the :class:`Fit` record, :func:`load_fit`.
- :mod:`~dustgp.fitting.checkpoint`: the checkpoint format (weights only, atomic, earlier layouts read).
"""

from __future__ import annotations

from .checkpoint import CHECKPOINT_FORMAT, data_fingerprint, load_checkpoint
from .config import DEFAULT_MAX_ITERATIONS, METHODS, STOP_RULES, FitConfig, FitError
from .loop import fit
from .record import Fit, load_fit
from .stopping import CONVERGED, INTERRUPTED

__all__ = [
    "CHECKPOINT_FORMAT",
    "CONVERGED",
    "DEFAULT_MAX_ITERATIONS",
    "INTERRUPTED",
    "METHODS",
    "STOP_RULES",
    "Fit",
    "FitConfig",
    "FitError",
    "data_fingerprint",
    "fit",
    "load_checkpoint",
    "load_fit",
]
