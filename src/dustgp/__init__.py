"""dustgp: 3D interstellar dust maps from stellar extinctions with sparse variational Gaussian processes.

Implements Dharmawardena, Bailer-Jones, Fouesneau & Foreman-Mackey 2022, A&A 658, A166.

>>> import dustgp
>>> cat = dustgp.Catalog.read("stars.fits", l="l", b="b", distance="dist", extinction="A0",
...                           extinction_err="A0_err")                           # doctest: +SKIP
>>> grid = dustgp.Grid(l=(50, 90, 20), b=(-10, 10, 20), d=(180, 500, 35), ghost_cells=2)
>>> fit = dustgp.fit(cat, grid, inducing_points=1000, length_scale=20, seed=1)  # doctest: +SKIP
>>> dmap = fit.predict(samples=200)                                                 # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dustgp")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

from .catalog import Catalog, CatalogError
from .dustmap import DustMap
from .emission import emission_ratio
from .fitting import Fit, FitConfig, FitError, fit, load_fit
from .grid import Grid, GridError
from .io import read_map, write_map
from .mass import dust_mass, total_mass
from .prediction import predict
from .query import DustMapQuery
from .simulate import SimulatedSky, paper_experiment, simulate

__all__ = [
    "Catalog",
    "CatalogError",
    "DustMap",
    "DustMapQuery",
    "Fit",
    "FitConfig",
    "FitError",
    "Grid",
    "GridError",
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
