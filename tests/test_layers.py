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
    # products layer registers its query and file functions with it, see dustgp.dustmap.register_product)
    "_version": 0,
    "_atomic": 0,
    "grid": 0,
    "catalog": 0,
    "gaia": 0,
    "distances": 0,
    "dustmap": 0,
    # 1 operators: star x cell sightlines, likelihoods, the RBF projection; synthetic skies built from them
    "sightlines": 1,
    "likelihood": 1,
    "kernels": 1,
    "simulate": 1,
    # 2 model: the GP prior and q(u)
    "model": 2,
    # 3 fitting and prediction: the update schemes, the loop and the Fit record; prediction reads a fit through
    # a protocol (dustgp.prediction.FittedModel), so Fit.predict can call it without a cycle
    "newton": 3,
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
    return {path.stem: path for path in sorted(SRC.glob("*.py"))}


def _dustgp_imports(path: Path) -> list[tuple[str, int]]:
    """The dustgp modules ``path`` imports, with line numbers: relative and absolute forms, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level > 1:
                raise AssertionError(f"{path.name}:{node.lineno}: an import of level {node.level} leaves the package")
            if node.level == 1:
                parts = (node.module or "").split(".") if node.module else []
            elif node.module and (node.module == "dustgp" or node.module.startswith("dustgp.")):
                parts = node.module.split(".")[1:]
            else:
                continue
            if parts:
                found.append((parts[0], node.lineno))
            else:  # ``from . import x`` or ``from dustgp import x``: x is a module or a name of the root
                for alias in node.names:
                    found.append((alias.name if alias.name in _modules() else "__init__", node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "dustgp" or alias.name.startswith("dustgp."):
                    parts = alias.name.split(".")[1:]
                    found.append((parts[0] if parts else "__init__", node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    return {name: {m for m, _ in _dustgp_imports(path) if m != name} for name, path in _modules().items()}


def test_every_module_has_a_layer() -> None:
    missing = sorted(set(_modules()) - set(LAYERS))
    assert not missing, f"modules with no layer in tests/test_layers.py LAYERS (place them, DESIGN.md): {missing}"


def test_no_import_from_a_higher_layer() -> None:
    upward = []
    for name, path in _modules().items():
        for target, line in _dustgp_imports(path):
            if target in LAYERS and name in LAYERS and LAYERS[target] > LAYERS[name]:
                upward.append(f"{name}.py:{line} (layer {LAYERS[name]}) imports {target} (layer {LAYERS[target]})")
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
    assert {m for m, _ in _dustgp_imports(path)} == {"grid", "fitting", "io", "plot"}


def test_no_import_cycles() -> None:
    graph = _graph()
    graph.pop("__init__")  # the root imports lazily by name; every module imports it implicitly
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_one_version() -> None:
    # one place defines the version; everything else imports it from dustgp._version
    defining = [
        name
        for name, path in _modules().items()
        if name != "_version" and ("version(\"dustgp\")" in path.read_text() or "__version__ =" in path.read_text())
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
from dustgp.dustmap import DustMap
from dustgp.grid import Grid
from dustgp.io import read_map, write_map
from dustgp import plot

grid = Grid(l=(50, 90, 8), b=(-10, 10, 6), d=(100, 500, 10), ghost_cells=1)
rho = np.full(grid.shape, 1e-3)
ext = np.cumsum(rho * grid.path_lengths[:, None, None], axis=0)
levels = np.array([16.0, 50.0, 84.0])
dmap = DustMap(grid=grid, percentiles=levels, density_mean=rho, density_std=0.1 * rho,
               density_percentiles=np.stack([0.9 * rho, rho, 1.1 * rho]), extinction_mean=ext,
               extinction_std=0.1 * ext, extinction_percentiles=np.stack([0.9 * ext, ext, 1.1 * ext]))
out = Path(tempfile.mkdtemp())
write_map(dmap, out / "map.nc")
write_map(dmap, out / "map.fits")
dmap.save(out / "again.nc")
back = read_map(out / "map.nc")
cube = DustMap.load(out / "map.fits")
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
