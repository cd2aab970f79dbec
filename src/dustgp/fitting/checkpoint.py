"""The checkpoint format: plain tensors, numbers and strings only, so that ``torch.load(weights_only=True)`` reads
them without executing code; written atomically; checkpoints of earlier versions read into today's layout.

It lives with the fit rather than with the file formats of :mod:`dustgp.io` because the training loop writes it
(io is a higher layer). The fields are written by :func:`dustgp.fitting.record.checkpoint_payload`.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import atomic_path
from ..catalog import Catalog
from ..grid import Grid
from ..model import DustGP
from .config import FitConfig, FitError

__all__ = ["CHECKPOINT_FORMAT", "data_fingerprint", "load_checkpoint", "model_from_state", "write_checkpoint"]

CHECKPOINT_FORMAT = "dustgp-checkpoint-1"

#: Model state of checkpoints written while q(v) and the inducing locations lived in GPyTorch's
#: ``VariationalStrategy``: their names there -> today's names (:class:`dustgp.model.DustGP`).
_LEGACY_NAMES = {
    "variational_strategy.inducing_points": "inducing_points",
    "variational_strategy._variational_distribution.variational_mean": "variational_mean",
}
#: GPyTorch's full M × M factor: its strict lower triangle is today's ``variational_lower``.
_LEGACY_FACTOR = "variational_strategy._variational_distribution.chol_variational_covar"
#: GPyTorch's bookkeeping buffers, which carry nothing of the fit.
_LEGACY_DROPPED = ("variational_strategy.variational_params_initialized", "variational_strategy.updated_strategy")
#: Pyro's separator between module and parameter names in its parameter store (SVI's optimiser state).
_PYRO_DIVIDER = "$$$"


def data_fingerprint(catalog: Catalog, grid: Grid) -> str:
    """SHA-256 of the fitted stars (l, b, distance, extinction, uncertainty, in order; then parallax, its error and
    the prior's length scale, when the catalogue has parallaxes) and of the grid.

    Stored in checkpoints, so that a fit is resumed only on the data it was started on.
    """
    digest = hashlib.sha256()
    columns = [catalog.l, catalog.b, catalog.distance, catalog.extinction, catalog.extinction_err]
    if catalog.parallax is not None:  # the distance posterior the fit averages over
        columns += [catalog.parallax, catalog.parallax_err, [catalog.parallax_length_scale]]
    for column in columns:
        digest.update(np.ascontiguousarray(column, dtype=np.float64).tobytes())
    digest.update(json.dumps(grid.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()


def write_checkpoint(path: str | os.PathLike, payload: dict[str, Any], *, overwrite: bool = True) -> Path:
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
    return _upgrade(payload)


def model_from_state(state: dict[str, torch.Tensor], config: FitConfig) -> DustGP:
    """The :class:`DustGP` of a checkpoint's model state (today's layout, see :func:`load_checkpoint`)."""
    z = state["inducing_points"]
    unit = float(state["length_unit"])
    gp = DustGP(
        (z * unit).to(torch.float64 if config.method == "newton" else config.torch_dtype),
        mean=0.0,
        learn_inducing_locations=config.learn_inducing_locations,
        length_unit=unit,
    )
    marginal = state.get("marginal_scale_tril")  # absent from checkpoints written before it
    gp.set_marginal(marginal if marginal is not None and marginal.numel() else None)
    gp.load_state_dict(state | {"marginal_scale_tril": gp.marginal_scale_tril})
    return gp


def _upgrade(payload: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint in today's layout: the model state (and SVI's optimiser state, keyed by parameter name) of a
    checkpoint written while q(v) lived in GPyTorch's ``VariationalStrategy`` renamed, its factor's strict lower
    triangle kept. Today's checkpoints are returned as they are."""
    state = payload.get("model")
    if not isinstance(state, dict) or _LEGACY_FACTOR not in state:
        return payload
    factor = state[_LEGACY_FACTOR]
    lower = tuple(torch.tril_indices(factor.shape[0], factor.shape[1], -1))
    model = {}
    for name, value in state.items():
        if name == _LEGACY_FACTOR:
            model["variational_lower"] = value[lower]
        elif name not in _LEGACY_DROPPED:
            model[_LEGACY_NAMES.get(name, name)] = value
    if "variational_log_diag" not in state:
        # written before the diagonal of L_q had a parameter of its own: it was |diag| of GPyTorch's factor
        model["variational_log_diag"] = factor.diagonal().abs().log()
    optimizer = payload.get("optimizer") or {}
    if payload.get("config", {}).get("method") == "svi":
        optimizer = {_legacy_pyro_name(name): _legacy_adam_state(name, s, lower) for name, s in optimizer.items()}
    return {**payload, "model": model, "optimizer": optimizer}


def _legacy_pyro_name(name: str) -> str:
    module, divider, parameter = name.rpartition(_PYRO_DIVIDER)
    parameter = "variational_lower" if parameter == _LEGACY_FACTOR else _LEGACY_NAMES.get(parameter, parameter)
    return module + divider + parameter


def _legacy_adam_state(name: str, state: dict[str, Any], lower: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """The optimiser state of one parameter; for GPyTorch's M × M factor, the moments of its strict lower triangle."""
    if not name.endswith(_PYRO_DIVIDER + _LEGACY_FACTOR):
        return state
    per_param = {
        key: {k: v[lower] if isinstance(v, torch.Tensor) and v.ndim == 2 else v for k, v in moments.items()}
        for key, moments in state["state"].items()
    }
    return {**state, "state": per_param}
