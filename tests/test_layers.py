"""The house rules that keep dustgp readable: one-way imports between layers, and maps without torch.

The layer table is DESIGN.md's picture applied to the current modules. Every ``import`` of a dustgp module is read
from the source with :mod:`ast` (module level, inside functions and under ``TYPE_CHECKING`` alike: an import
hidden in a function is still a dependency), and the tests fail on an import from a higher layer, on a cycle, and
on a module missing from the table. A subprocess then writes, reads, queries and plots a small map and checks that
torch, GPyTorch and Pyro were never imported.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dustgp

SRC = Path(__file__).resolve().parents[1] / "src" / "dustgp"

#: Module -> layer (DESIGN.md). A module may import modules of its own layer or lower ones, never a higher one.
LAYERS: dict[str, int] = {
    # 0 foundations: version, atomic writes, grid, catalogue, and the map record (plain data on a grid; the
    # products layer registers its query and file functions with it, see dustgp.posterior_map.register_product)
    "_version": 0,
    "_atomic": 0,
    "_units": 0,
    "grid": 0,
    "catalog": 0,
    "posterior_map": 0,
    # 1 operators: star x cell sightlines, likelihoods, the RBF projection; synthetic skies built from them
    "sightlines": 1,
    "likelihood": 1,
    "model_scatter": 1,
    "projection": 1,
    "linalg": 1,
    "simulate": 1,
    # 2 model: the GP prior and q(u)
    "model": 2,
    # 3 fitting and prediction: the update schemes, the loop and the Fit record; prediction reads a fit through
    # a protocol (dustgp.prediction.FittedModel), so Fit.predict can call it without a cycle
    "prediction": 3,
    "fitting": 3,
    # 5 products: files, dustmaps-style queries, mass, emission, validation
    "io": 5,
    "query": 5,
    "mass": 5,
    "emission": 5,
    "validation": 5,
    # 6 applications
    "plot": 6,
    "view": 6,
    "tiles": 6,
    "config": 6,
    "pipeline": 6,
    "cli": 6,
    # the package root may import anything (it imports lazily, see dustgp.__init__)
    "__init__": 7,
}

#: Modules that reading, querying and plotting a saved map must never import.
HEAVY = ("torch", "gpytorch", "pyro")


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name below ``dustgp``: ``grid``, ``catalog`` (a package's
    ``__init__``), ``catalog.gaia``; the root's ``__init__`` is ``__init__``."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        found[".".join(parts)] = path
    return found


def _top(name: str) -> str:
    """The top-level module or package a dotted module name belongs to: its layer is the table's."""
    return name.split(".")[0]


def _package_of(name: str, path: Path) -> list[str]:
    """The package ``path`` lives in, as parts below ``dustgp`` (empty for the root)."""
    if path.name == "__init__.py":
        return [] if name == "__init__" else name.split(".")
    return name.split(".")[:-1]


def _resolve(parts: list[str], known: set[str]) -> str:
    """The longest existing module named by ``parts`` (``catalog.columns.Thing`` -> ``catalog.columns``)."""
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in known:
            return ".".join(parts[:n])
    return "__init__"


def _dustgp_imports(path: Path, name: str | None = None, known: set[str] | None = None) -> list[tuple[str, int]]:
    """The dustgp modules ``path`` imports (dotted names), with line numbers: relative and absolute forms, at any
    depth of the code (inside functions and under ``TYPE_CHECKING`` too)."""
    known = set(_modules()) if known is None else known
    name = name if name is not None else next(n for n, p in _modules().items() if p == path)
    package = _package_of(name, path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 > len(package):
                    raise AssertionError(f"{path.name}:{node.lineno}: import of level {node.level} leaves the package")
                target = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module and (node.module == "dustgp" or node.module.startswith("dustgp.")):
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # ``from .catalog import columns`` imports the submodule
                sub = ".".join([*target, alias.name])
                found.append((sub if sub in known else _resolve(target, known), node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "dustgp" or alias.name.startswith("dustgp."):
                    found.append((_resolve(alias.name.split(".")[1:], known), node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the modules it imports (dotted names)."""
    return {name: {m for m, _ in _dustgp_imports(path, name) if m != name} for name, path in _modules().items()}


def _top_graph() -> dict[str, set[str]]:
    """Top-level module or package -> the others it imports (a package's modules count as the package)."""
    graph: dict[str, set[str]] = {}
    for name, targets in _graph().items():
        graph.setdefault(_top(name), set()).update(_top(t) for t in targets if _top(t) != _top(name))
    return graph


def test_every_module_has_a_layer() -> None:
    missing = sorted({_top(name) for name in _modules()} - set(LAYERS))
    assert not missing, f"modules with no layer in tests/test_layers.py LAYERS (place them, DESIGN.md): {missing}"


def test_no_import_from_a_higher_layer() -> None:
    upward = []
    for name, path in _modules().items():
        for target, line in _dustgp_imports(path, name):
            mine, theirs = LAYERS.get(_top(name)), LAYERS.get(_top(target))
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{name}:{line} (layer {mine}) imports {target} (layer {theirs})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first = last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_a_cycle() -> None:
    # the detector itself can fail: a three-module ring is found, a chain is not
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_import_reader_sees_hidden_imports(tmp_path: Path) -> None:
    source = """
    from typing import TYPE_CHECKING
    from . import grid
    if TYPE_CHECKING:
        from .fitting import Fit
    def f():
        from .io import read_map
        import dustgp.plot
    """
    path = tmp_path / "example.py"
    path.write_text(textwrap.dedent(source))
    assert {m for m, _ in _dustgp_imports(path, "example")} == {"grid", "fitting", "io", "plot"}


def test_import_reader_resolves_imports_inside_a_package(tmp_path: Path) -> None:
    # a module ``pkg.example`` importing its sibling, a name of it, a module two levels up and a name of the root;
    # three levels up leaves dustgp
    source = """
    from . import sibling
    from .sibling import anything
    from .. import grid
    from ..grid import Grid
    from .. import __version__
    from dustgp.pkg import name_of_the_package
    """
    path = tmp_path / "example.py"
    path.write_text(textwrap.dedent(source))
    known = {"grid", "pkg", "pkg.sibling", "pkg.example"}
    assert {m for m, _ in _dustgp_imports(path, "pkg.example", known)} == {"pkg.sibling", "grid", "__init__", "pkg"}
    path.write_text("from ... import grid\n")
    with pytest.raises(AssertionError, match="leaves the package"):
        _dustgp_imports(path, "pkg.example", known)


@pytest.mark.parametrize("graph_of", [_graph, _top_graph], ids=["modules", "packages"])
def test_no_import_cycles(graph_of) -> None:
    # between modules (a package's own modules included: one importing its package's ``__init__``, which imports
    # it, is a cycle), and between top-level modules and packages
    graph = graph_of()
    graph.pop("__init__")  # the root imports lazily by name; every module imports it implicitly
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


#: Most lines a module may have: one concept, readable in one sitting (DESIGN.md). A module that must be longer is
#: named here with the reason.
MAX_LINES = 500
LONGER: dict[str, str] = {}


def test_modules_are_readable_in_one_sitting() -> None:
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES and name not in LONGER
    }
    assert not long, f"modules over {MAX_LINES} lines (split them, or say why in LONGER): {long}"


def test_one_version() -> None:
    # one place defines the version; everything else imports it from dustgp._version
    defining = [
        name
        for name, path in _modules().items()
        if name != "_version" and ('version("dustgp")' in path.read_text() or "__version__ =" in path.read_text())
    ]
    assert not defining, f"modules that work out the version themselves: {defining}"


_TORCH_FREE = """
import json, sys, tempfile
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import numpy as np
import astropy.units as u
from astropy.coordinates import SkyCoord

import dustgp
from dustgp.posterior_map import PosteriorMap
from dustgp.grid import Grid
from dustgp.io import read_map, write_map
from dustgp import plot

grid = Grid(l=(50, 90, 8), b=(-10, 10, 6), d=(100, 500, 10), ghost_cells=1)
rho = np.full(grid.shape, 1e-3)
ext = np.cumsum(rho * grid.path_lengths[:, None, None], axis=0)
levels = np.array([16.0, 50.0, 84.0])
dmap = PosteriorMap(grid=grid, percentiles=levels, density_mean=rho, density_std=0.1 * rho,
               density_percentiles=np.stack([0.9 * rho, rho, 1.1 * rho]), extinction_mean=ext,
               extinction_std=0.1 * ext, extinction_percentiles=np.stack([0.9 * ext, ext, 1.1 * ext]))
out = Path(tempfile.mkdtemp())
write_map(dmap, out / "map.nc")
write_map(dmap, out / "map.fits")
dmap.save(out / "again.nc")
back = read_map(out / "map.nc")
cube = PosteriorMap.load(out / "map.fits")
coords = SkyCoord(l=[60, 70] * u.deg, b=[0, 1] * u.deg, distance=[300, 400] * u.pc, frame="galactic")
values = [back.query(coords).tolist(), cube.query_gal(70.0, 0.0, 0.3).tolist(),
          dustgp.DustMapQuery(back).query(coords, mode="median").tolist()]
plot.extinction_map(back, 300 * u.pc)
plot.density_slice(back, 300 * u.pc)
plot.sightline_profile(back, 70.0, 0.0)
print(json.dumps({"heavy": [m for m in %r if m in sys.modules], "values": values}))
"""


def test_reading_querying_and_plotting_a_map_imports_no_torch() -> None:
    script = _TORCH_FREE % (HEAVY,)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], f"imported by reading, querying and plotting a map: {report['heavy']}"
    # the queries ran and saw the map: a constant 1e-3 mag/pc integrates to exactly 0.3 and 0.4 mag at 300 and
    # 400 pc (extinction is linear within a cell), up to float64 rounding over ~10 cells
    mean, gal, median = report["values"]
    assert mean == pytest.approx([0.3, 0.4], rel=1e-12)
    assert gal == pytest.approx(0.3, rel=1e-12)
    assert median == pytest.approx([0.3, 0.4], rel=1e-12)


def test_the_check_sees_torch() -> None:
    # the subprocess check can fail: a script that imports torch is reported
    script = f"import sys, json, torch; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert "torch" in json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["Catalog", "Grid", "fit", "read_map", "DustMapQuery", "simulate", "fitting"])
def test_lazy_root_names_resolve(name: str) -> None:
    assert getattr(dustgp, name) is not None


def test_a_submodule_does_not_replace_the_function_of_its_name() -> None:
    # ``dustgp.simulate`` is a function and a module; whichever is imported first, the root's name is the function
    script = (
        "import types, dustgp.simulate\n"
        "from dustgp import simulate\n"
        "import dustgp\n"
        "assert callable(simulate) and not isinstance(simulate, types.ModuleType), simulate\n"
        "assert dustgp.simulate is simulate\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_root_all_matches_lazy_table() -> None:
    assert sorted(dustgp.__all__) == sorted(["__version__", *dustgp._LAZY])
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        _ = dustgp.nonexistent
