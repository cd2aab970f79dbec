"""TOML run configuration: which stars, which grid, how to fit, where to predict, what to write.

A run file has the tables ``[catalog]`` (or ``[simulate]``), ``[grid]``, ``[fit]``, ``[predict]`` and ``[output]``;
see ``examples/*.toml``. Paths are relative to the run file. Every table and key is checked against what dustgp
knows, and every value against the type it must have, so a typo or a quoted number never passes silently: the
message names the file, the table, the key and what was expected.

The keys of ``[fit]`` are the fields of :class:`~dustgp.fitting.FitConfig`, those of ``[catalog]`` the options of
:meth:`~dustgp.catalog.Catalog.read` (plus ``path`` and ``max_distance``), those of ``[simulate]`` the options of
:func:`~dustgp.simulate.simulate`; their types are read from the annotations, so the checks follow the code. With
``source = "gaia-dr3"``, ``[catalog]`` fetches Gaia DR3 stars for the region of ``[grid]`` and its keys are the options
of :func:`~dustgp.catalog.catalog_for_grid` (``path``, ``cache``, padding, ``cuts = {...}``, ...).

Example
-------
.. code-block:: toml

    [catalog]
    path = "stars.fits"
    l = "l"
    b = "b"
    distance = "dist_p50"
    distance_unit = "pc"          # of unitless distance columns (default pc)
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

import dataclasses
import inspect
import tomllib
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from .catalog import Catalog, DistanceKind, GaiaCuts, Region, catalog_for_grid, cut_keys, sky_chunks
from .fitting import FitConfig
from .grid import DEFAULT_REFINEMENT, Grid
from .simulate import simulate

__all__ = ["ConfigError", "RunConfig", "load_config"]

TABLES = ("catalog", "simulate", "grid", "fit", "predict", "output")
MAP_FORMATS = ("netcdf", "fits", "healpix")


class ConfigError(ValueError):
    """A run file that cannot be used as written."""


class _Axis:
    """Schema marker: a grid axis, ``[lo, hi, n]`` or a list of cell edges (checked in full by :class:`Grid`)."""


GRID_KEYS: dict[str, Any] = {"l": _Axis, "b": _Axis, "d": _Axis, "ghost_cells": int}
PREDICT_KEYS: dict[str, Any] = {
    "l": _Axis,
    "b": _Axis,
    "d": _Axis,
    "ghost_cells": int,
    "refine": float,
    "samples": int,
    "keep_samples": int,
    "percentiles": list[float],
    "cell_variance": bool,
    "seed": int,
}
OUTPUT_KEYS: dict[str, Any] = {
    "dir": str,
    "holdout": float,
    "holdout_seed": int,
    "formats": list[Literal["netcdf", "fits", "healpix"]],
    "figures": bool,
    "slice_distances": list[float],
    "checkpoint_every": int,
}


def _signature_keys(func: Callable[..., Any], skip: set[str]) -> dict[str, Any]:
    """Keyword options of ``func`` and their annotated types."""
    hints = get_type_hints(func)
    return {
        name: hints.get(name, Any)
        for name, p in inspect.signature(func).parameters.items()
        if name not in skip and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def fit_keys() -> dict[str, Any]:
    """The keys of ``[fit]``: every field of :class:`FitConfig` with its annotated type."""
    hints = get_type_hints(FitConfig)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(FitConfig) if f.init}


#: Where ``[catalog]`` stars come from: a table file (the default) or the Gaia DR3 archive (:mod:`dustgp.catalog.gaia`).
CATALOG_SOURCES = Literal["file", "gaia-dr3"]


def catalog_keys() -> dict[str, Any]:
    """The keys of ``[catalog]``: the options of :meth:`Catalog.read`, ``path`` and ``max_distance``."""
    return {"source": CATALOG_SOURCES, "path": str, "max_distance": float} | _signature_keys(
        Catalog.read, {"cls", "path"}
    )


def gaia_catalog_keys() -> dict[str, Any]:
    """The keys of ``[catalog]`` with ``source = "gaia-dr3"``: the options of :func:`dustgp.catalog.catalog_for_grid`.

    The region comes from ``[grid]``; ``cuts`` is a table of :class:`dustgp.catalog.GaiaCuts` fields.
    """
    keys = _signature_keys(catalog_for_grid, {"grid", "progress", "service"})
    return {"source": CATALOG_SOURCES, "max_distance": float} | keys | {"cuts": cut_keys()}


def simulate_keys() -> dict[str, Any]:
    """The keys of ``[simulate]``: the options of :func:`simulate`; ``region`` is a table of axes, ``distance_kind``
    how the fit reads the simulated distances (as ``[catalog]``'s, :meth:`Catalog.read`)."""
    region = {"region": {"l": _Axis, "b": _Axis, "d": _Axis}}
    return _signature_keys(simulate, {"region"}) | region | {"distance_kind": DistanceKind}


# ---- type checks ----------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _conforms(value: Any, tp: Any) -> bool:
    """Whether a TOML value has the annotated type ``tp`` (an int is a float; a list is a list or a tuple)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if tp is _Axis:
        return isinstance(value, list) and len(value) >= 2 and all(_is_number(v) for v in value)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return _is_number(value)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, Sequence):
        return isinstance(value, list) and all(_conforms(v, args[0] if args else Any) for v in value)
    if origin is tuple:
        if not isinstance(value, list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(v, args[0]) for v in value)
        return len(value) == len(args) and all(_conforms(v, a) for v, a in zip(value, args, strict=True))
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return isinstance(value, dict)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # an annotation this checker does not know: leave it to the code that uses the value


def _expected(tp: Any) -> str:
    """``tp`` in words, as a run-file writer thinks of it."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(_expected(a) for a in args if a is not type(None)))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if tp is _Axis:
        return "[lo, hi, n] (n an integer) or a list of cell edges"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    if origin in (list, Sequence):
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        if len(set(args)) == 1:
            return f"a list of {len(args)} {_plural(args[0])}"
        return "a list of " + ", ".join(_expected(a) for a in args)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def _plural(tp: Any) -> str:
    words = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
    return words.get(tp, _expected(tp))


def _kind(value: Any) -> str:
    """The TOML type of a value, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _check_table(path: Path, name: str, table: Any, schema: Mapping[str, Any]) -> dict[str, Any]:
    """``table`` as a dict, after checking it is a table whose keys and value types ``schema`` knows."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{name}] must be a table, got {table!r} ({_kind(table)})")
    unknown = sorted(set(table) - set(schema))
    if unknown:
        keys = "key " + repr(unknown[0]) if len(unknown) == 1 else "keys " + ", ".join(map(repr, unknown))
        raise ConfigError(f"{path}: [{name}] unknown {keys}; known keys: {', '.join(sorted(schema))}")
    for key, value in table.items():
        tp = schema[key]
        if isinstance(tp, dict):
            _check_table(path, f"{name}.{key}", value, tp)
        elif not _conforms(value, tp):
            raise ConfigError(f"{path}: [{name}] {key}: expected {_expected(tp)}, got {value!r} ({_kind(value)})")
    return dict(table)


def _check_range(path: Path, name: str, table: dict[str, Any], key: str, ok: Callable[[Any], bool], what: str) -> None:
    if key in table and not ok(table[key]):
        raise ConfigError(f"{path}: [{name}] {key}: expected {what}, got {table[key]!r}")


# ---- the run configuration ------------------------------------------------------------------------------------


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
        """The prediction grid: explicit bounds, or the training grid refined ``refine`` times (default
        :data:`dustgp.grid.DEFAULT_REFINEMENT`)."""
        spec = self.predict
        if all(k in spec for k in ("l", "b", "d")):
            return Grid.from_dict({k: spec[k] for k in ("l", "b", "d")} | {"ghost_cells": spec.get("ghost_cells", 0)})
        return self.grid.refined(float(spec.get("refine", DEFAULT_REFINEMENT)))

    def predict_options(self) -> dict[str, Any]:
        keys = ("samples", "keep_samples", "percentiles", "cell_variance", "seed")
        return {k: self.predict[k] for k in keys if k in self.predict}


def load_config(path: str | Path, *, overrides: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """Read and check a TOML run file.

    Parameters
    ----------
    path : path
    overrides : dict, optional
        ``{table: {key: value}}`` applied on top of the file (e.g. from command-line options); ``None`` values
        are skipped.

    Returns
    -------
    RunConfig

    Raises
    ------
    ConfigError
        A missing file, invalid TOML, a missing or unknown table, an unknown key, a value of the wrong type or
        range, or values that do not make a grid or a fit configuration. The message names the file, the
        table and the key.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"run file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"run file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for table, values in (overrides or {}).items():
        raw.setdefault(table, {}).update({k: v for k, v in values.items() if v is not None})
    unknown = sorted(set(raw) - set(TABLES))
    if unknown:
        raise ConfigError(
            f"{path}: unknown top-level {'table' if isinstance(raw[unknown[0]], dict) else 'key'} {unknown[0]!r}; "
            f"known tables: {', '.join(f'[{t}]' for t in TABLES)}"
        )
    if "grid" not in raw:
        raise ConfigError(f"{path}: a [grid] table with l, b, d = [lo, hi, n] is required")
    if ("catalog" in raw) == ("simulate" in raw):
        raise ConfigError(f"{path}: give exactly one of [catalog] (your stars) or [simulate] (a simulated sky)")

    grid_table = _check_table(path, "grid", raw["grid"], GRID_KEYS)
    fit_table = _check_table(path, "fit", raw.get("fit", {}), fit_keys())
    predict = _check_table(path, "predict", raw.get("predict", {}), PREDICT_KEYS)
    output = _check_table(path, "output", raw.get("output", {}), OUTPUT_KEYS)
    for name, table in (("fit", fit_table), ("output", output)):
        _check_range(path, name, table, "checkpoint_every", lambda v: v >= 1, "an integer >= 1 (iterations)")
    _check_range(path, "output", output, "holdout", lambda v: 0.0 <= v < 1.0, "a share in [0, 1)")
    _check_range(path, "output", output, "slice_distances", lambda v: all(x > 0 for x in v), "distances > 0 pc")
    _check_range(path, "predict", predict, "samples", lambda v: v >= 1, "an integer >= 1")
    _check_range(path, "predict", predict, "keep_samples", lambda v: v >= 0, "an integer >= 0")
    _check_range(path, "predict", predict, "refine", lambda v: v > 0, "a factor > 0")
    _check_range(path, "predict", predict, "percentiles", lambda v: all(0 <= q <= 100 for q in v), "levels in 0..100")
    given = [k for k in ("l", "b", "d") if k in predict]
    if given and len(given) < 3:
        raise ConfigError(
            f"{path}: [predict] has {', '.join(given)} but not all of l, b, d: give all three for an explicit "
            "prediction grid, or none (the training grid refined `refine` times)"
        )
    if given and "refine" in predict:
        raise ConfigError(f"{path}: [predict] give either l, b, d or refine, not both")
    if not given and "ghost_cells" in predict:
        raise ConfigError(
            f"{path}: [predict] ghost_cells applies to an explicit grid (l, b, d); a refined grid keeps the "
            "training grid's"
        )
    if "checkpoint_every" in output:
        # [output] is where a user looks for what is written when; the value is the fit's option
        if "checkpoint_every" not in fit_keys():
            raise ConfigError(f"{path}: [output] checkpoint_every: this version of the fit has no such option")
        every = output.pop("checkpoint_every")
        if fit_table.get("checkpoint_every", every) != every:
            raise ConfigError(
                f"{path}: checkpoint_every is {every} in [output] but {fit_table['checkpoint_every']} in [fit]; "
                "give it once"
            )
        fit_table["checkpoint_every"] = every

    try:
        grid = Grid.from_dict(grid_table)
    except ValueError as exc:
        raise ConfigError(f"{path}: [grid] {exc}") from None
    try:
        fit = FitConfig.from_dict(fit_table)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: [fit] {exc}") from None

    catalog = simulate_options = None
    source = raw["catalog"].get("source", "file") if isinstance(raw.get("catalog"), dict) else "file"
    if not _conforms(source, CATALOG_SOURCES):  # first: it decides which keys are known
        raise ConfigError(f"{path}: [catalog] source: expected {_expected(CATALOG_SOURCES)}, got {source!r}")
    if source == "gaia-dr3":
        catalog = _check_table(path, "catalog", raw["catalog"], gaia_catalog_keys())
        for key in ("path", "cache"):
            if key in catalog:
                catalog[key] = str((path.parent / Path(catalog[key]).expanduser()).resolve())
        catalog.setdefault("cache", str((path.parent / "gaia-cache").resolve()))
        _check_range(path, "catalog", catalog, "retries", lambda v: v >= 0, "an integer >= 0")
        try:  # the region, its chunks and the cuts now, not after a fetch
            GaiaCuts.from_dict(catalog.get("cuts"))
            padding = {k: catalog[k] for k in ("padding_deg", "padding_fraction") if k in catalog}
            sky_chunks(Region.from_grid(grid, **padding), chunk_deg=catalog.get("chunk_deg", 5.0))
        except ValueError as exc:
            raise ConfigError(f"{path}: [catalog] {exc}") from None
    elif "catalog" in raw:
        catalog = _check_table(path, "catalog", raw["catalog"], catalog_keys())
        if "path" not in catalog:
            raise ConfigError(f"{path}: [catalog] needs path = '...'")
        catalog["path"] = str((path.parent / Path(catalog["path"]).expanduser()).resolve())
        for key in ("extinction_err", "distance_err"):
            if isinstance(catalog.get(key), list):
                catalog[key] = tuple(catalog[key])
    else:
        simulate_options = _check_table(path, "simulate", raw["simulate"], simulate_keys())
        if "region" in simulate_options:
            try:
                Grid.from_dict(simulate_options["region"] | {"ghost_cells": 0})
            except ValueError as exc:
                raise ConfigError(f"{path}: [simulate.region] {exc}") from None
    if "dir" in output:
        output["dir"] = str((path.parent / output["dir"]).resolve())
    config = RunConfig(grid, fit, catalog, simulate_options, predict, output, raw)
    try:
        config.prediction_grid()  # now, not after the fit
    except ValueError as exc:
        raise ConfigError(f"{path}: [predict] {exc}") from None
    return config
