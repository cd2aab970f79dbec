"""dustgp: 3D interstellar dust maps from stellar extinctions with sparse variational Gaussian processes.

Implements Dharmawardena, Bailer-Jones, Fouesneau & Foreman-Mackey 2022, A&A 658, A166.

>>> import dustgp
>>> cat = dustgp.Catalog.read("stars.fits", l="l", b="b", distance="dist", extinction="A0",
...                           extinction_err="A0_err")                           # doctest: +SKIP
>>> grid = dustgp.Grid(l=(50, 90, 20), b=(-10, 10, 20), d=(180, 500, 35), ghost_cells=2)
>>> fit = dustgp.fit(cat, grid, inducing_points=1000, length_scale=20, seed=1)  # doctest: +SKIP
>>> dmap = fit.predict(samples=200)                                                 # doctest: +SKIP

Names are imported on first use (PEP 562), so reading, querying and plotting a saved map never imports torch,
GPyTorch or Pyro; only fitting, prediction and simulation do.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

# torch-free; importing them registers the map's file formats and queries with PosteriorMap (see dustgp.posterior_map)
from . import io, query  # noqa: F401
from ._version import __version__

if TYPE_CHECKING:
    from .catalog import Catalog, CatalogError
    from .emission import emission_ratio
    from .fitting import Fit, FitConfig, FitError, fit, load_fit
    from .grid import Grid, GridError
    from .io import read_map, write_map
    from .mass import dust_mass, total_mass
    from .posterior_map import PosteriorMap
    from .prediction import predict
    from .query import DustMapQuery
    from .simulate import SimulatedSky, paper_experiment, simulate

#: Public name -> the module that defines it.
_LAZY = {
    "Catalog": "catalog",
    "CatalogError": "catalog",
    "PosteriorMap": "posterior_map",
    "DustMapQuery": "query",
    "Fit": "fitting",
    "FitConfig": "fitting",
    "FitError": "fitting",
    "Grid": "grid",
    "GridError": "grid",
    "SimulatedSky": "simulate",
    "dust_mass": "mass",
    "emission_ratio": "emission",
    "fit": "fitting",
    "load_fit": "fitting",
    "paper_experiment": "simulate",
    "predict": "prediction",
    "read_map": "io",
    "simulate": "simulate",
    "total_mass": "mass",
    "write_map": "io",
}

__all__ = [
    "Catalog",
    "CatalogError",
    "DustMapQuery",
    "Fit",
    "FitConfig",
    "FitError",
    "Grid",
    "GridError",
    "PosteriorMap",
    "SimulatedSky",
    "__version__",
    "dust_mass",
    "emission_ratio",
    "fit",
    "load_fit",
    "paper_experiment",
    "predict",
    "read_map",
    "simulate",
    "total_mass",
    "write_map",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    try:  # a submodule not imported yet: ``dustgp.fitting`` after a bare ``import dustgp``
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Package(types.ModuleType):
    """The package's module type: importing the submodule :mod:`dustgp.simulate` must not replace the function
    ``dustgp.simulate`` (the import system sets a package attribute for each submodule it loads)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == name and value.__name__ == f"{__name__}.{name}":
            value = getattr(value, name)  # the submodule has run by now: bind the function it defines
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
