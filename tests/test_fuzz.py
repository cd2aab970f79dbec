"""Fuzzing the edges (issue 11, item 9): catalogue tables, grid specs and run files.

Any input either gives a valid result or one of dustgp's own error classes with a message; never a bare Python
exception (``ValueError`` from numpy, ``TypeError``, ``KeyError``, ...), and never NaN in a written map.
"""

import json
import math
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import dustgp
from dustgp.catalog import MAX_ABS_EXTINCTION, MAX_DISTANCE, MIN_EXTINCTION_ERR, Catalog, CatalogError
from dustgp.config import ConfigError, RunConfig, load_config
from dustgp.fitting import FitError
from dustgp.grid import Grid, GridError
from dustgp.io import read_map

#: dustgp's error classes for bad input (every one carries a message naming what was wrong)
LIBRARY_ERRORS = (CatalogError, GridError, ConfigError, FitError)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----- values ------------------------------------------------------------------------------------------------
awkward_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-12, 1e-7, 5e-7, 29.9, 30.0, 31.0, 1e5, 1e6, 1e300, -1.0, 360.0, 90.0, -90.0]),
    st.floats(min_value=-100, max_value=1000),
)
anything = st.one_of(
    awkward_floats,
    st.integers(min_value=-(2**63), max_value=2**63),
    st.booleans(),
    st.text(max_size=5),
    st.none(),
)


def _message(exc: BaseException) -> str:
    event(f"refused: {type(exc).__name__}")
    text = str(exc).strip()
    assert text, f"{type(exc).__name__} without a message"
    return text


# ----- catalogue tables --------------------------------------------------------------------------------------
UNITS = [None, u.deg, u.rad, u.pc, u.kpc, u.mag, u.s, u.dimensionless_unscaled]


@st.composite
def tables(draw) -> tuple[Table, dict]:
    n = draw(st.integers(min_value=0, max_value=12))
    all_plausible = draw(st.booleans())
    table = Table()
    plausible = {
        "l": st.floats(0, 360),
        "b": st.floats(-90, 90),
        "distance": st.floats(1, 5000),
        "A0": st.floats(0, 5),
        "A0_err": st.floats(0.01, 1),
    }
    for name, good in plausible.items():
        kind = "plausible" if all_plausible else draw(st.sampled_from(["plausible"] * 6 + ["awkward"] * 3 + ["other"]))
        if kind == "plausible":
            values = draw(st.lists(good, min_size=n, max_size=n))
        elif kind == "awkward":  # some rows awkward
            values = draw(st.lists(st.one_of(good, awkward_floats), min_size=n, max_size=n))
        else:
            kind = draw(st.sampled_from(["float", "int", "bool", "str", "missing"]))
            if kind == "missing":
                continue
            element = {"float": awkward_floats, "int": st.integers(-10, 10**6), "bool": st.booleans()}.get(
                kind, st.text(max_size=3)
            )
            values = draw(st.lists(element, min_size=n, max_size=n))
        column = np.array(values) if n else np.array([], dtype=float)
        right = {"l": u.deg, "b": u.deg, "distance": u.pc}.get(name, u.mag)
        unit = draw(st.sampled_from([None, right] if kind == "plausible" else UNITS))
        table[name] = column * unit if unit is not None and column.dtype.kind in "iuf" else column
    if all_plausible and draw(st.booleans()):
        return table, {"on_bad": draw(st.sampled_from(["raise", "drop"]))}
    options = {
        "on_bad": draw(st.sampled_from(["raise", "drop", "warn", "ignore"])),
        "distance_unit": draw(st.sampled_from([None, "pc", "kpc", "mag", "furlong", "lightyear"])),
        "extinction_err_floor": draw(st.one_of(st.just(0.0), awkward_floats)),
    }
    return table, options


@FUZZ
@given(tables())
def test_any_catalogue_table_is_read_or_refused_with_a_catalogue_error(drawn) -> None:
    table, options = drawn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            catalog = Catalog.from_table(table, **options)
        except LIBRARY_ERRORS as exc:
            _message(exc)
            return
    # what is accepted is plausible: every bad row was reported, not silently kept
    event("accepted")
    assert len(catalog) > 0
    for values in (catalog.l, catalog.b, catalog.distance, catalog.extinction, catalog.extinction_err):
        assert np.all(np.isfinite(values))
    assert np.all((catalog.distance > 0) & (catalog.distance <= MAX_DISTANCE))
    assert np.all(np.abs(catalog.extinction) <= MAX_ABS_EXTINCTION)
    assert np.all(catalog.extinction_err >= MIN_EXTINCTION_ERR)
    assert np.all((catalog.b >= -90) & (catalog.b <= 90))


# ----- grid specs --------------------------------------------------------------------------------------------
valid_axis = st.one_of(
    st.tuples(st.floats(1, 40), st.floats(41, 89), st.integers(1, 5)),  # valid for every axis
    st.lists(st.floats(1, 89), min_size=2, max_size=5, unique=True).map(sorted),  # valid edges too
)
axis_specs = st.one_of(
    valid_axis,
    valid_axis,
    valid_axis,
    st.tuples(anything, anything, anything),  # (lo, hi, n) in Python
    st.tuples(awkward_floats, awkward_floats, st.integers(-3, 50)),
    st.lists(st.one_of(awkward_floats, st.integers(-400, 400)), max_size=5),  # explicit edges
    st.lists(anything, max_size=4),
    st.lists(st.lists(st.floats(0, 10), max_size=2), max_size=3),  # ragged: not edges at all
    anything,
)


@FUZZ
@given(l=axis_specs, b=axis_specs, d=axis_specs, ghost_cells=st.one_of(st.integers(-2, 4), st.integers(0, 2), anything))
# found by this test (bare numpy ValueErrors before): a ragged list, and bounds whose difference overflows
@example(l=[[1.0], [1.0, 2.0]], b=(-1, 1, 1), d=(100, 200, 2), ghost_cells=1)
@example(l=(0, 10, 1), b=(-1, 1, 1), d=(-1.7e308, 1.7e308, 3), ghost_cells=1)
# the issue's own: a Python (lo, hi, n) with a float n, a list of three, an infinite d_max
@example(l=(10, 20, 6.0), b=(-1, 1, 1), d=(100, 200, 2), ghost_cells=1)
@example(l=[10, 20, 6], b=(-1, 1, 1), d=(100, 200, 2), ghost_cells=1)
@example(l=(10, 20, 2), b=(-1, 1, 1), d=(100, math.inf, 2), ghost_cells=1)
# found by this test: to_dict -> from_dict moved l edges by rounding, and a resume then saw "another grid"
@example(l=(60, 70, 2**62), b=(-1, 1, 1), d=(100, 200, 2), ghost_cells=1)  # numpy's "array is too big"
@example(l=(60, 70, 2), b=(-1, 1, 1), d=(100, 200, 2), ghost_cells=995_334_325_513)  # MemoryError (7 TiB)
@example(l=(1.9, 41.0, 3), b=(1.0, 41.0, 1), d=(1.0, 41.0, 1), ghost_cells=0)
def test_any_grid_spec_gives_a_valid_grid_or_a_grid_error(l, b, d, ghost_cells) -> None:
    try:
        grid = Grid(l=l, b=b, d=d, ghost_cells=ghost_cells)
    except LIBRARY_ERRORS as exc:
        _message(exc)
        return
    event("accepted")
    for edges in (grid.l_edges, grid.b_edges, grid.d_edges):
        assert np.all(np.isfinite(edges))
        assert np.all(np.diff(edges) > 0)
    assert grid.l_edges[-1] - grid.l_edges[0] <= 360.0 + 1e-9
    assert grid.b_edges[0] >= -90.0
    assert grid.b_edges[-1] <= 90.0
    assert grid.d_edges[0] == 0.0 or grid.ghost_cells == 0
    assert Grid.from_dict(grid.to_dict()) == grid


# ----- run files ---------------------------------------------------------------------------------------------
BASE_RUN = {
    "simulate": {
        "n_stars": 200,
        "n_clumps": 1,
        "seed": 4,
        "region": {"l": [60, 70, 4], "b": [-4, 4, 2], "d": [150, 300, 4]},
    },
    "grid": {"l": [60, 70, 2], "b": [-4, 4, 2], "d": [150, 300, 3], "ghost_cells": 1},
    "fit": {"inducing_points": 10, "max_iterations": 2, "seed": 1, "lr": 0.02, "stop": "none"},
    "predict": {"refine": 1.0, "samples": 4},
    "output": {"formats": ["netcdf"], "figures": False, "checkpoint_every": 1},
}
KNOWN = sorted(
    {(t, k) for t, keys in BASE_RUN.items() for k in keys}
    | {
        ("fit", "method"),
        ("fit", "dtype"),
        ("fit", "length_scale"),
        ("fit", "scale"),
        ("grid", "ghost_cels"),
        ("predict", "l"),
        ("predict", "percentiles"),
        ("catalog", "path"),
        ("output", "holdout"),
        ("typo", "x"),
    }
)
toml_values = st.recursive(
    st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from("ablds"), inner, max_size=3)),
    max_leaves=6,
)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


def _run_file(tables: dict) -> str:
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{json.dumps(k)} = {_toml(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


@st.composite
def run_files(draw) -> dict:
    run = json.loads(json.dumps(BASE_RUN))
    for _ in range(draw(st.integers(0, 3))):
        table, key = draw(st.sampled_from(KNOWN))
        if draw(st.integers(0, 4)) == 0:
            run.get(table, {}).pop(key, None)
        else:
            run.setdefault(table, {})[key] = draw(toml_values)
    return run


def _changed(table: str, key: str, value) -> dict:
    run = json.loads(json.dumps(BASE_RUN))
    run[table][key] = value
    return run


@FUZZ
@given(run_files())
@example(_changed("grid", "ghost_cells", 995_334_325_513))  # found by this test: a MemoryError in numpy
@example(_changed("predict", "refine", math.inf))
@example(_changed("predict", "refine", math.nan))
@example(_changed("predict", "refine", 1e300))
@example(_changed("fit", "lr", 1e6))
@example(_changed("fit", "inducing_points", "100"))
@example(_changed("grid", "ghost_cels", 4))
def test_any_run_file_loads_or_is_refused_with_a_config_error(tmp_path_factory, run) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "run.toml"
    path.write_text(_run_file(run))
    try:
        config = load_config(path)
    except ConfigError as exc:
        message = _message(exc)
        assert str(path) in message or path.name in message  # the file is named
        return
    event("accepted")
    assert isinstance(config, RunConfig)
    assert isinstance(config.grid, Grid)
    config.prediction_grid()  # a valid file makes a prediction grid too


# ----- end to end: whatever fits writes a map without NaN ----------------------------------------------------
TRAIN = Grid(l=(60, 70, 2), b=(-4, 4, 2), d=(150, 300, 3), ghost_cells=1)


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 40),
    sigma=st.sampled_from([MIN_EXTINCTION_ERR, 1e-3, 0.05, 3.0]),
    largest_a=st.sampled_from([0.5, 29.9]),
    off_grid=st.booleans(),
    method=st.sampled_from(["newton", "svi"]),
    seed=st.integers(0, 2**16),
)
def test_a_fit_on_awkward_stars_writes_a_map_without_nan_or_says_why(
    tmp_path, n, sigma, largest_a, off_grid, method, seed
) -> None:
    rng = np.random.default_rng(seed)
    l = rng.uniform(60, 70, n) + (30.0 if off_grid else 0.0)  # all off the grid: a FitError, not a map
    catalog = Catalog.from_arrays(
        l, rng.uniform(-4, 4, n), rng.uniform(150, 300, n), rng.uniform(0, largest_a, n), np.full(n, sigma)
    )
    options = {"method": method, "inducing_points": 5, "max_iterations": 1, "particles": 2, "progress": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if off_grid:
            with pytest.raises(FitError, match="no star"):
                dustgp.fit(catalog, TRAIN, **options)
            return
        fitted = dustgp.fit(catalog, TRAIN, **options)
    path = fitted.predict(TRAIN, samples=4, progress=False).save(tmp_path / f"map-{seed}-{n}.nc", overwrite=True)
    back = read_map(path)
    for name in ("density_mean", "density_std", "density_percentiles", "extinction_mean", "extinction_percentiles"):
        assert np.all(np.isfinite(getattr(back, name))), name
