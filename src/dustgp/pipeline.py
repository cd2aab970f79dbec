"""A whole run from a :class:`~dustgp.config.RunConfig`: stars → fit → map → files, figures and a report.

This is what ``dustgp fit RUN.toml`` and ``dustgp demo`` execute. Everything it writes goes into one output
folder: ``fit.ckpt`` (resumable), ``map.nc`` / ``map.fits``, ``figures/*.png`` and ``report.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import Catalog
from .config import RunConfig, load_config
from .dustmap import DustMap
from .fitting import Fit, fit
from .simulate import SimulatedSky, simulate
from .validation import compare_to_truth, holdout_report

__all__ = ["RunResult", "default_demo_config", "run", "write_figures"]

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run produced: the fit, the map, the report and the files written."""

    fit: Fit
    dmap: DustMap
    report: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    sky: SimulatedSky | None = None


def default_demo_config() -> Path:
    """Path of the built-in run file of the paper's Section 3 experiment (``dustgp/data/demo.toml``)."""
    return Path(str(resources.files("dustgp") / "data" / "demo.toml"))


def _stars(config: RunConfig) -> tuple[Catalog, SimulatedSky | None]:
    if config.catalog is not None:
        options = dict(config.catalog)
        path = options.pop("path")
        max_distance = options.pop("max_distance", None)
        catalog = Catalog.read(path, **options)
        if max_distance is not None:
            catalog = catalog.select(catalog.distance <= float(max_distance))
        return catalog, None
    options = dict(config.simulate or {})
    region = options.pop("region", None)
    from .grid import Grid

    truth_grid = Grid.from_dict(region | {"ghost_cells": 0}) if region else config.grid.with_ghost_cells(0)
    sky = simulate(truth_grid, **options)
    return sky.catalog, sky


def _write_json(path: Path, payload: dict[str, Any]) -> Path:
    from .io import atomic_path

    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=float))
    return path


def write_figures(
    dmap: DustMap,
    folder: Path,
    *,
    distances: list[float] | None = None,
    losses: np.ndarray | None = None,
    sky: SimulatedSky | None = None,
    sightlines: list[tuple[float, float]] | None = None,
) -> list[Path]:
    """Write the standard figures of a map as PNG files into ``folder``.

    Density slices at ``distances`` (pc; default four evenly spaced) — beside the truth when ``sky`` is given —,
    the total extinction map, the ELBO history when ``losses`` are given, and sightline profiles at
    ``sightlines`` ((l, b) in deg; default the map's centre).
    """
    import matplotlib.pyplot as plt

    from . import plot

    folder.mkdir(parents=True, exist_ok=True)
    grid = dmap.grid
    distances = distances or list(np.linspace(grid.d_min, grid.d_max, 6)[1:-1].round())
    written = []

    def save(fig: Any, name: str) -> None:
        path = folder / name
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    if sky is not None:
        save(plot.truth_comparison(dmap, sky.density_at, distances), "density_truth_comparison.png")
    else:
        fig, axes = plt.subplots(1, len(distances), figsize=(4 * len(distances), 3.6), squeeze=False)
        for ax, d in zip(axes[0], distances, strict=True):
            plot.density_slice(dmap, d, ax=ax)
        save(fig, "density_slices.png")
    fig = plt.figure(figsize=(6, 4.5))
    plot.extinction_map(dmap, ax=plot.sky_axes(grid, fig=fig))
    save(fig, "total_extinction.png")
    if losses is not None:
        fig, ax = plt.subplots(figsize=(6, 4))
        plot.elbo_history(losses, ax=ax)
        save(fig, "elbo.png")
    for l, b in sightlines or [(float(np.median(grid.l_centers)), float(np.median(grid.b_centers)))]:
        fig, ax = plt.subplots(figsize=(6, 4))
        plot.sightline_profile(dmap, l, b, ax=ax)
        save(fig, f"sightline_l{l:g}_b{b:g}.png")
    return written


def run(
    config: RunConfig | str | Path,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    figures: bool | None = None,
) -> RunResult:
    """Execute a run: read or simulate stars, fit, predict, write the map, figures and ``report.json``.

    Parameters
    ----------
    config : RunConfig or path
    out : path, optional
        Output folder (default ``[output] dir`` of the run file, else ``./dustgp-run``).
    resume : bool
        Continue from ``out/fit.ckpt`` if it exists.
    overwrite : bool
        Replace existing map files in ``out``; without it an existing map is an error.
    progress : bool
        Progress bars on stderr.
    figures : bool, optional
        Write figures (default ``[output] figures``, else True).
    """
    if not isinstance(config, RunConfig):
        config = load_config(config)
    folder = Path(out or config.output.get("dir", "dustgp-run"))
    folder.mkdir(parents=True, exist_ok=True)
    formats = config.output.get("formats", ["netcdf"])
    suffix = {"netcdf": ".nc", "fits": ".fits", "healpix": ".healpix.fits"}
    unknown = sorted(set(formats) - set(suffix))
    if unknown:
        raise ValueError(f"[output] formats: unknown {unknown}; choose from {sorted(suffix)}")
    targets = [folder / f"map{suffix[f]}" for f in formats]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist; pass --overwrite to replace them")

    started = time.perf_counter()
    catalog, sky = _stars(config)
    held_out = None
    holdout = float(config.output.get("holdout", 0.0))
    if holdout > 0:
        catalog, held_out = catalog.split(1.0 - holdout, seed=int(config.output.get("holdout_seed", 0)))
    logger.info("stars: %d for the fit%s", len(catalog), f", {len(held_out)} held out" if held_out else "")
    checkpoint = folder / "fit.ckpt"
    fitted = fit(
        catalog,
        config.grid,
        config=config.fit,
        checkpoint=checkpoint,
        resume=checkpoint if resume and checkpoint.exists() else None,
        progress=progress,
    )
    fit_seconds = fitted.seconds
    t0 = time.perf_counter()
    dmap = fitted.predict(config.prediction_grid(), progress=progress, **config.predict_options())
    predict_seconds = time.perf_counter() - t0
    dmap.meta["run_config"] = config.raw

    report: dict[str, Any] = {
        "stars_fitted": fitted.stars,
        "iterations": fitted.iterations,
        "stopped_by": fitted.stopped_by,
        "fit_seconds": fit_seconds,
        "seconds_per_iteration": fit_seconds / max(fitted.iterations, 1),
        "predict_seconds": predict_seconds,
        "hyperparameters": fitted.hyperparameters(),
        "prediction_grid": repr(dmap.grid),
    }
    result = RunResult(fitted, dmap, report, sky=sky)
    if sky is not None:
        report["truth"] = compare_to_truth(dmap, sky).to_dict()
    if held_out is not None and len(held_out):
        report["holdout"] = holdout_report(dmap, held_out).to_dict()

    from .io import write_map

    for fmt, target in zip(formats, targets, strict=True):
        result.files.append(write_map(dmap, target, format=fmt, overwrite=overwrite))
    if config.output.get("figures", True) if figures is None else figures:
        result.files += write_figures(
            dmap,
            folder / "figures",
            distances=config.output.get("slice_distances"),
            losses=fitted.losses,
            sky=sky,
        )
    report["total_seconds"] = time.perf_counter() - started
    result.files.append(_write_json(folder / "report.json", report))
    return result
