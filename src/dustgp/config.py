"""TOML run configuration: which stars, which grid, how to fit, where to predict, what to write.

A run file has the tables ``[catalog]`` (or ``[simulate]``), ``[grid]``, ``[fit]``, ``[predict]`` and ``[output]``;
see ``examples/*.toml``. Paths are relative to the run file. Unknown keys are errors, so a typo never passes
silently.

Example
-------
.. code-block:: toml

    [catalog]
    path = "stars.fits"
    l = "l"
    b = "b"
    distance = "dist_p50"
    extinction = "A0_p50"
    extinction_err = ["A0_p16", "A0_p84"]

    [grid]
    l = [50, 90, 20]
    b = [-10, 10, 20]
    d = [180, 500, 35]
    ghost_cells = 2

    [fit]
    inducing_points = 1000
    length_scale = 20
    seed = 1
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fitting import FitConfig
from .grid import Grid

__all__ = ["ConfigError", "RunConfig", "load_config"]

CATALOG_KEYS = {
    "path", "l", "b", "distance", "extinction", "extinction_err", "distance_err", "parallax", "parallax_err",
    "format", "on_bad", "extinction_err_floor", "inflate", "max_distance",
}  # fmt: skip
SIMULATE_KEYS = {"n_stars", "n_clumps", "seed", "noise", "region", "foreground"}
PREDICT_KEYS = {
    "l",
    "b",
    "d",
    "ghost_cells",
    "refine",
    "samples",
    "keep_samples",
    "percentiles",
    "cell_variance",
    "seed",
}
OUTPUT_KEYS = {"dir", "holdout", "holdout_seed", "formats", "figures", "slice_distances", "checkpoint_every"}


class ConfigError(ValueError):
    """A run file that cannot be used as written."""


def _check_keys(table: dict[str, Any], allowed: set[str], name: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"[{name}]: unknown keys {unknown}; allowed: {sorted(allowed)}")


@dataclass
class RunConfig:
    """A parsed run file.

    Attributes
    ----------
    grid : Grid
        Training grid.
    fit : FitConfig
    catalog : dict or None
        Keyword arguments of :meth:`dustgp.Catalog.read` (``path`` resolved against the run file).
    simulate : dict or None
        Options of :func:`dustgp.simulate` when the stars are simulated instead.
    predict : dict
        Prediction grid (``l``, ``b``, ``d``, ``ghost_cells`` or ``refine``) and options of :func:`dustgp.predict`.
    output : dict
        ``dir``, ``holdout`` (share of stars held out to validate), ``formats``, ``figures``, ``slice_distances``.
    raw : dict
        The file as read (recorded in the outputs).
    """

    grid: Grid
    fit: FitConfig
    catalog: dict[str, Any] | None = None
    simulate: dict[str, Any] | None = None
    predict: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def prediction_grid(self) -> Grid:
        """The prediction grid: explicit bounds, or the training grid refined ``refine`` (default 2.5) times."""
        spec = self.predict
        if all(k in spec for k in ("l", "b", "d")):
            return Grid.from_dict({k: spec[k] for k in ("l", "b", "d")} | {"ghost_cells": spec.get("ghost_cells", 0)})
        return self.grid.refined(float(spec.get("refine", 2.5)))

    def predict_options(self) -> dict[str, Any]:
        keys = ("samples", "keep_samples", "percentiles", "cell_variance", "seed")
        return {k: self.predict[k] for k in keys if k in self.predict}


def load_config(path: str | Path, *, overrides: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """Read and check a TOML run file.

    Parameters
    ----------
    path : path
    overrides : dict, optional
        ``{table: {key: value}}`` applied on top of the file (e.g. from command-line options).

    Raises
    ------
    ConfigError
        Missing tables, unknown keys or values that do not make a grid or a fit configuration.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"run file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for table, values in (overrides or {}).items():
        raw.setdefault(table, {}).update({k: v for k, v in values.items() if v is not None})
    _check_keys(raw, {"catalog", "simulate", "grid", "fit", "predict", "output"}, "top level")
    if "grid" not in raw:
        raise ConfigError(f"{path}: a [grid] table with l, b, d = [lo, hi, n] is required")
    if ("catalog" in raw) == ("simulate" in raw):
        raise ConfigError(f"{path}: give exactly one of [catalog] (your stars) or [simulate] (a simulated sky)")
    try:
        grid = Grid.from_dict(raw["grid"])
        fit = FitConfig.from_dict(raw.get("fit", {}))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    catalog = simulate = None
    if "catalog" in raw:
        catalog = dict(raw["catalog"])
        _check_keys(catalog, CATALOG_KEYS, "catalog")
        if "path" not in catalog:
            raise ConfigError(f"{path}: [catalog] needs path = '...'")
        catalog["path"] = str((path.parent / Path(catalog["path"]).expanduser()).resolve())
        for key in ("extinction_err", "distance_err"):
            if isinstance(catalog.get(key), list):
                catalog[key] = tuple(catalog[key])
    else:
        simulate = dict(raw["simulate"])
        _check_keys(simulate, SIMULATE_KEYS, "simulate")
    predict = dict(raw.get("predict", {}))
    _check_keys(predict, PREDICT_KEYS, "predict")
    output = dict(raw.get("output", {}))
    _check_keys(output, OUTPUT_KEYS, "output")
    if "dir" in output:
        output["dir"] = str((path.parent / output["dir"]).resolve())
    holdout = float(output.get("holdout", 0.0))
    if not 0.0 <= holdout < 1.0:
        raise ConfigError(f"[output] holdout: expected a share in [0, 1), got {holdout}")
    return RunConfig(grid, fit, catalog, simulate, predict, output, raw)
