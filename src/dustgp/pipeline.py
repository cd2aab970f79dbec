"""A whole run from a :class:`~dustgp.config.RunConfig`: stars → fit → map → files, figures and a report.

This is what ``dustgp fit RUN.toml`` and ``dustgp demo`` execute. Everything it writes goes into one output
folder: ``fit.ckpt`` (resumable), ``map.nc`` / ``map.fits``, ``figures/*.png`` and ``report.json``. Every output is
checked before any computing: none is replaced without ``overwrite``, and a folder holding a checkpoint is
continued (``resume``) or replaced (``overwrite``), never silently restarted.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from ._atomic import atomic_path
from ._version import __version__
from .catalog import Catalog, catalog_for_grid
from .config import ConfigError, RunConfig, load_config
from .fitting import INTERRUPTED, Fit, FitError, fit, load_checkpoint, load_fit
from .grid import Grid
from .posterior_map import PosteriorMap
from .simulate import SimulatedSky, simulate
from .validation import compare_to_truth, holdout_report

__all__ = [
    "CheckpointError",
    "RunResult",
    "default_demo_config",
    "figure_names",
    "read_checkpoint",
    "read_fit",
    "run",
    "write_figures",
]

logger = logging.getLogger(__name__)

MAP_SUFFIXES = {"netcdf": ".nc", "fits": ".fits", "healpix": ".healpix.fits"}


class CheckpointError(FitError):
    """A file that cannot be used as a dustgp checkpoint: damaged, truncated, foreign or incomplete."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's payload, read without executing code, or a :class:`CheckpointError` naming the file.

    :func:`dustgp.fitting.load_checkpoint` already turns damaged or foreign files into a
    :class:`~dustgp.fitting.FitError` that says what the file is (never torch's text, which suggests
    ``weights_only=False``, i.e. executing the file's code); here it becomes the CLI's checkpoint error.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    CheckpointError
        Anything else that stops the file from being read as a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return load_checkpoint(path)  # damaged or foreign bytes are a FitError there, without torch's text
    except FitError as exc:
        raise CheckpointError(str(exc)) from None


def read_fit(path: str | Path, *, device: str | None = None) -> Fit:
    """:func:`dustgp.fitting.load_fit` with every problem of the file as a :class:`CheckpointError`."""
    read_checkpoint(path)
    try:
        return load_fit(path, device=device)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:  # a payload missing its parts
        raise CheckpointError(f"{path} is not a usable dustgp checkpoint: {type(exc).__name__}: {exc}") from None


@dataclass
class RunResult:
    """What a run produced: the fit, the map, the report and the files written."""

    fit: Fit
    dmap: PosteriorMap | None  # None when the fit was interrupted: only its checkpoint is written
    report: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    sky: SimulatedSky | None = None


class RunLock:
    """An exclusive lock on an output folder (``.dustgp.lock``, holding the owner's pid) for one run at a time.

    Two runs into one folder would leave the checkpoint of one beside the maps of the other. A lock whose owner
    is no longer alive (killed, machine restarted) is taken over with a warning.
    """

    NAME = ".dustgp.lock"

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / self.NAME

    def __enter__(self) -> RunLock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and _alive(owner):
                    raise FileExistsError(
                        f"{self.path.parent} is in use by another dustgp run (pid {owner}); wait for it, or use "
                        "another output folder"
                    ) from None
                logger.warning("%s: taking over the lock of a run that is no longer alive (pid %s)", self.path, owner)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            return self
        raise FileExistsError(f"{self.path}: could not take the run lock")

    def __exit__(self, *exc: object) -> None:
        if self._owner() == os.getpid():
            self.path.unlink(missing_ok=True)

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_temporaries(folder: Path) -> None:
    """Remove temporary files that an interrupted write left in ``folder`` (and its figures).

    Atomic writes go to ``.NAME.XXXX.tmp[.SUFFIX]`` beside their target and are renamed when complete; a process killed
    mid-write (kill -9) leaves one behind. The run lock is held, so none of them belongs to a live writer.
    """
    for tmp in [*folder.glob(".*.tmp*"), *(folder / "figures").glob(".*.tmp*")]:
        logger.info("removing %s, left by an interrupted write", tmp)
        tmp.unlink(missing_ok=True)


def default_demo_config() -> Path:
    """Path of the built-in run file of the paper's Section 3 experiment (``dustgp/data/demo.toml``)."""
    return Path(str(resources.files("dustgp") / "data" / "demo.toml"))


def _stars(config: RunConfig, *, progress: bool = True) -> tuple[Catalog, SimulatedSky | None]:
    if config.catalog is not None:
        options = dict(config.catalog)
        max_distance = options.pop("max_distance", None)
        if options.pop("source", "file") == "gaia-dr3":
            catalog = catalog_for_grid(config.grid, progress=progress, **options)
        else:
            catalog = Catalog.read(options.pop("path"), **options)
        if max_distance is not None:
            catalog = catalog.select(catalog.distance <= float(max_distance))
        return catalog, None
    options = dict(config.simulate or {})
    region = options.pop("region", None)
    measured = options.pop("distance_kind", "posterior") == "measurement"
    truth_grid = Grid.from_dict(region | {"ghost_cells": 0}) if region else config.grid.with_ghost_cells(0)
    sky = simulate(truth_grid, **options)
    if measured and sky.catalog.distance_err is None:
        raise ConfigError("[simulate] distance_kind: 'measurement' needs distance_errors (the distances are exact)")
    return (sky.catalog.with_volume_prior() if measured else sky.catalog), sky


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic):
        return obj.tolist()
    return str(obj)  # TOML dates, paths


def _write_json(path: Path, payload: dict[str, Any], *, overwrite: bool) -> Path:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=_json_default))
    return path


#: Per-star posterior predictive checks of a run (:attr:`dustgp.fitting.Fit.star_checks`), an ECSV table.
STAR_CHECKS = "stars.ecsv"


def _write_star_checks(table: Table, path: Path, *, overwrite: bool) -> Path:
    """The stars' predictive checks as ECSV (units and description kept), written atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        table.write(tmp, format="ascii.ecsv", overwrite=True)
    return path


def _default_sightline(grid: Grid) -> tuple[float, float]:
    """The map's central pixel column, in rounded deg (the median of computed centres carries rounding noise)."""
    from .plot import DEGREE_DECIMALS

    l, b = (round(float(np.median(c)), DEGREE_DECIMALS) + 0.0 for c in (grid.l_centers, grid.b_centers))
    return l, b


def figure_names(
    grid: Grid,
    *,
    truth: bool,
    losses: bool,
    sightlines: list[tuple[float, float]] | None = None,
    checks: bool = False,
) -> list[str]:
    """File names :func:`write_figures` gives its figures, in order, for a map on ``grid``."""
    from .plot import format_degrees

    names = ["density_truth_comparison.png" if truth else "density_slices.png", "total_extinction.png"]
    names += ["elbo.png"] if losses else []
    names += ["posterior_predictive.png"] if checks else []
    for l, b in sightlines or [_default_sightline(grid)]:
        names.append(f"sightline_l{format_degrees(l)}_b{format_degrees(b)}.png")
    return names


def _existing(paths: list[Path]) -> None:
    found = [str(p) for p in paths if p.exists()]
    if found:
        raise FileExistsError(f"{', '.join(found)} exist{'s' if len(found) == 1 else ''}; pass --overwrite to replace")


def write_figures(
    dmap: PosteriorMap,
    folder: Path,
    *,
    distances: list[float] | None = None,
    losses: np.ndarray | None = None,
    sky: SimulatedSky | None = None,
    sightlines: list[tuple[float, float]] | None = None,
    overwrite: bool = False,
    star_checks: Table | None = None,
) -> list[Path]:
    """Write the standard figures of a map as PNG files into ``folder``.

    Density slices at ``distances`` (pc; default four evenly spaced) — beside the truth when ``sky`` is given —,
    the total extinction map, the ELBO history when ``losses`` are given, the posterior predictive check of the
    stars when ``star_checks`` (:attr:`Fit.star_checks`) are given, and sightline profiles at
    ``sightlines`` ((l, b) in deg; default the map's centre). Names: :func:`figure_names`.

    Raises
    ------
    FileExistsError
        One of the figures exists and ``overwrite`` is False (checked before drawing any).
    """
    import matplotlib.pyplot as plt

    from . import plot

    grid = dmap.grid
    points = sightlines or [_default_sightline(grid)]
    names = figure_names(
        grid, truth=sky is not None, losses=losses is not None, sightlines=points, checks=star_checks is not None
    )
    if not overwrite:
        _existing([folder / name for name in names])
    folder.mkdir(parents=True, exist_ok=True)
    distances = distances or list(np.linspace(grid.d_min, grid.d_max, 6)[1:-1].round())
    written = []

    def save(fig: Any, name: str) -> None:
        path = folder / name
        with atomic_path(path, overwrite) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
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
    if star_checks is not None:
        fig, ax = plt.subplots(figsize=(6, 4))
        plot.predictive_check(star_checks["normalised_residual"], star_checks["flagged"], ax=ax)
        save(fig, "posterior_predictive.png")
    for (l, b), name in zip(points, names[-len(points) :], strict=True):
        fig, ax = plt.subplots(figsize=(6, 4))
        plot.sightline_profile(dmap, l, b, ax=ax)
        save(fig, name)
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

    Raises
    ------
    FileExistsError
        Without ``overwrite``: a map, figure or ``report.json`` of this run exists, or ``fit.ckpt`` exists and
        ``resume`` is False. Checked before any computing.
    CheckpointError
        ``resume`` with a ``fit.ckpt`` that is not a readable checkpoint.
    """
    if not isinstance(config, RunConfig):
        config = load_config(config)
    folder = Path(out or config.output.get("dir", "dustgp-run"))
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file; expected an output folder")
    formats = config.output.get("formats", ["netcdf"])
    unknown = sorted(set(formats) - set(MAP_SUFFIXES))
    if unknown:
        raise ValueError(f"[output] formats: unknown {unknown}; choose from {sorted(MAP_SUFFIXES)}")
    targets = [folder / f"map{MAP_SUFFIXES[f]}" for f in formats]
    draw = config.output.get("figures", True) if figures is None else figures
    checkpoint = folder / "fit.ckpt"
    if not overwrite:
        planned = [*targets, folder / "report.json", folder / STAR_CHECKS]
        if draw:
            names = figure_names(config.prediction_grid(), truth=config.simulate is not None, losses=True, checks=True)
            planned += [folder / "figures" / name for name in names]
        _existing(planned)
        if checkpoint.exists() and not resume:
            raise FileExistsError(
                f"{checkpoint} holds a fit; pass --resume to continue it or --overwrite to start afresh"
            )
    if resume and checkpoint.exists():
        read_checkpoint(checkpoint)  # a clear message now, not torch's from inside the fit
    folder.mkdir(parents=True, exist_ok=True)
    with RunLock(folder):
        _clean_stale_temporaries(folder)
        started = time.perf_counter()
        catalog, sky = _stars(config, progress=progress)
        held_out = None
        holdout = float(config.output.get("holdout", 0.0))
        if holdout > 0:
            catalog, held_out = catalog.split(1.0 - holdout, seed=int(config.output.get("holdout_seed", 0)))
        logger.info("stars: %d for the fit%s", len(catalog), f", {len(held_out)} held out" if held_out else "")
        fitted = fit(
            catalog,
            config.grid,
            config=config.fit,
            checkpoint=checkpoint,
            resume=checkpoint if resume and checkpoint.exists() else None,
            progress=progress,
        )
        fit_seconds = fitted.seconds
        if fitted.stopped_by in INTERRUPTED:  # the checkpoint holds the work; maps of a half-trained model are not made
            report = {"dustgp_version": __version__, "stopped_by": fitted.stopped_by, "iterations": fitted.iterations}
            return RunResult(fitted, None, report, files=[checkpoint])
        t0 = time.perf_counter()
        dmap = fitted.predict(config.prediction_grid(), progress=progress, **config.predict_options())
        predict_seconds = time.perf_counter() - t0
        dmap.meta["run_config"] = config.raw

        report: dict[str, Any] = {
            "dustgp_version": __version__,
            "seed": fitted.config.seed,
            "seeds": {
                "fit": fitted.config.seed,
                "predict": dmap.meta.get("seed"),
                **({"simulate": _sky_seed(config)} if sky is not None else {}),
                **({"holdout": int(config.output.get("holdout_seed", 0))} if held_out is not None else {}),
            },
            "stars_fitted": fitted.stars,
            "foreground": fitted.foreground,
            "method": fitted.config.method,
            "iterations": fitted.iterations,
            "stopped_by": fitted.stopped_by,
            "converged": fitted.converged,
            "learned": fitted.learned,
            "prior_warning": fitted.prior_warning,
            "dtype": "float64" if fitted.config.method == "newton" else fitted.config.dtype,
            "constrained_cells": None if dmap.coverage is None else float(dmap.coverage.mean()),
            "fit_seconds": fit_seconds,
            "seconds_per_iteration": fit_seconds / max(fitted.iterations, 1),
            "predict_seconds": predict_seconds,
            "hyperparameters": fitted.hyperparameters(),
            "prediction_grid": repr(dmap.grid),
        }
        checks = fitted.posterior_predictive()
        if checks:
            report["posterior_predictive"] = checks
            dmap.meta["posterior_predictive"] = checks
        result = RunResult(fitted, dmap, report, sky=sky)
        if sky is not None:
            report["truth"] = compare_to_truth(dmap, sky).to_dict()
        if held_out is not None and len(held_out):
            report["holdout"] = holdout_report(
                dmap,
                held_out,
                error_floor=fitted.config.error_floor,
                scatter=fitted.scatter,
                outliers=fitted.outliers,
                nu=fitted.config.nu if fitted.config.likelihood == "student-t" else None,
            ).to_dict()

        from .io import write_map

        for fmt, target in zip(formats, targets, strict=True):
            result.files.append(write_map(dmap, target, format=fmt, overwrite=overwrite))
        if draw:
            result.files += write_figures(
                dmap,
                folder / "figures",
                distances=config.output.get("slice_distances"),
                losses=fitted.losses,
                sky=sky,
                overwrite=overwrite,
                star_checks=fitted.star_checks,
            )
        if fitted.star_checks is not None:
            result.files.append(_write_star_checks(fitted.star_checks, folder / STAR_CHECKS, overwrite=overwrite))
        report["total_seconds"] = time.perf_counter() - started
        report["run_config"] = config.raw
        result.files.append(_write_json(folder / "report.json", report, overwrite=overwrite))
        return result


def _sky_seed(config: RunConfig) -> int:
    """The seed of a simulated sky: ``[simulate] seed``, else :func:`dustgp.simulate`'s default."""
    default = inspect.signature(simulate).parameters["seed"].default
    return int((config.simulate or {}).get("seed", default))
