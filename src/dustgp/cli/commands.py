"""What each ``dustgp`` subcommand does: one function per command, taking the parsed arguments and returning the exit
status (see :mod:`dustgp.cli.entry`).

The modules a command needs are imported inside it, so the commands that only read a map (view, query, info, plot)
never import torch, whose import dominates their start-up.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from .._version import __version__

__all__ = [
    "cmd_demo",
    "cmd_fetch_gaia",
    "cmd_fit",
    "cmd_info",
    "cmd_plot",
    "cmd_predict",
    "cmd_query",
    "cmd_simulate",
    "cmd_view",
]

logger = logging.getLogger("dustgp")


def _check_new_file(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; expected a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such directory")


def _pair(text: str | None, flag: str) -> tuple[float, float] | None:
    """``LO,HI`` as two floats (checked further by :func:`dustgp.simulate.simulate`); a ValueError names ``flag``."""
    if text is None:
        return None
    try:
        lo, hi = text.split(",")
        return float(lo), float(hi)
    except ValueError:
        raise ValueError(f"{flag}: expected LO,HI (two numbers, e.g. 0.05,0.2), got {text!r}") from None


def cmd_simulate(args: argparse.Namespace) -> int:
    from astropy.io.fits.verify import VerifyWarning

    from .._atomic import atomic_path
    from ..grid import Grid
    from ..simulate import simulate

    out = Path(args.out)
    _check_new_file(out, args.overwrite)  # before simulating
    region = Grid(l=args.l, b=args.b, d=args.d, ghost_cells=0)
    options: dict[str, Any] = {
        "n_stars": args.n_stars,
        "structures": args.structures,
        "structure_size": args.structure_size,
        "n_clumps": args.clumps,
        "background": args.background,
        "noise": args.noise,
        "noise_floor": args.noise_floor,
        "distance_errors": _pair(args.distance_errors, "--distance-errors"),
        "distance_error_model": args.distance_error_model,
        "outlier_fraction": args.outlier_fraction,
        "outlier_amplitude": _pair(args.outlier_amplitude, "--outlier-amplitude"),
        "foreground": not args.empty_foreground,
        "seed": args.seed,
    }
    given = {"field_length_scale": args.field_length_scale, "field_scale": args.field_scale}
    options |= {key: value for key, value in given.items() if value is not None}
    sky = simulate(region, **options)
    table = sky.to_table()
    table.meta["dustgp_version"] = __version__
    table.meta["dustgp_simulate"] = json.dumps(options | {"background": sky.background})
    with atomic_path(out, args.overwrite) as tmp, warnings.catch_warnings():
        # long metadata keys become HIERARCH cards in FITS, the standard's way to hold them; astropy warns on each
        warnings.filterwarnings("ignore", message="Keyword name", category=VerifyWarning)
        table.write(tmp, overwrite=True, format=args.format)
    logger.info("wrote %d simulated stars to %s (columns %s)", len(table), out, ", ".join(table.colnames))
    return 0


def _status(stopped_by: str) -> int:
    """Exit status of a fit: 130 after Ctrl-C, 143 after SIGTERM (128 + the signal), 0 otherwise."""
    return {"interrupted": 130, "terminated": 143}.get(stopped_by, 0)


def cmd_fit(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..pipeline import run

    overrides = {"fit": {"max_iterations": args.max_iterations, "seed": args.seed, "device": args.device}}
    config = load_config(args.config, overrides=overrides)
    result = run(
        config,
        out=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        figures=False if args.no_figures else None,
    )
    return _finish(result)


def _finish(result: Any) -> int:
    """Print what a run produced and give its exit status."""
    if result.dmap is None:
        print(
            f"fit {result.fit.stopped_by} after {result.fit.iterations} iterations; checkpoint {result.files[0]} "
            "(continue with --resume); no maps written"
        )
    else:
        _print_report(result.report, result.files)
    return _status(result.fit.stopped_by)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..pipeline import default_demo_config, run

    overrides: dict[str, dict[str, Any]] = {"fit": {"max_iterations": args.max_iterations}}
    if args.n_stars:
        overrides["simulate"] = {"n_stars": args.n_stars}
    config = load_config(default_demo_config(), overrides=overrides)
    result = run(config, out=args.out, resume=args.resume, overwrite=True, progress=not args.quiet)
    return _finish(result)


def _print_report(report: dict[str, Any], files: list[Path]) -> None:
    from ..fitting.foreground import ForegroundCheck
    from ..validation import HoldoutReport, TruthComparison

    stars = report["stars_fitted"]
    print(f"stars fitted: {stars['used']} (off grid {stars['off_grid']}, in ghost cells {stars['in_ghost_cells']})")
    if (report.get("foreground") or {}).get("empty"):
        print(f"{ForegroundCheck(**report['foreground']).describe()}: trained without ghost cells")
    print(
        f"training ({report.get('method', 'svi')}): {report['iterations']} iterations, {report['fit_seconds']:.1f} s "
        f"({report['seconds_per_iteration']:.3f} s/iteration), stopped by {report['stopped_by']}"
        + ("" if report.get("converged", True) else " -- NOT CONVERGED: the map may still change; resume to go on")
        + ("" if report.get("learned", True) else " -- LEARNED NOTHING: the map is the prior's")
    )
    print(f"prediction: {report['predict_seconds']:.1f} s on {report['prediction_grid']}")
    h = report["hyperparameters"]
    print(
        "hyperparameters: length scales "
        + ", ".join(f"{g:.1f}" for g in h["length_scale_pc"])
        + f" pc; scale {h['scale_dex']:.3f} dex; mean density 10^{h['mean_log10_density']:.3f} mag/pc"
    )
    if report.get("prior_warning"):
        print(f"WARNING: {report['prior_warning']}")
    if "truth" in report:
        print("accuracy against the truth:")
        print("  " + str(TruthComparison(**report["truth"])).replace("\n", "\n  "))
    if "holdout" in report:
        print(str(HoldoutReport(**report["holdout"])))
    print("wrote: " + ", ".join(str(f) for f in files))


def cmd_predict(args: argparse.Namespace) -> int:
    from ..grid import Grid
    from ..io import check_output_path, write_map
    from ..pipeline import read_fit

    check_output_path(args.out, overwrite=args.overwrite)  # before any computing
    grid = None
    if args.l and args.b and args.d:
        grid = Grid(l=args.l, b=args.b, d=args.d, ghost_cells=args.ghost_cells)
    elif args.l or args.b or args.d:
        raise ValueError("give all of --l, --b and --d for an explicit grid, or none for the refined training grid")
    if args.refine is not None and grid is not None:
        raise ValueError("give either --l/--b/--d or --refine, not both")
    if args.refine is not None and not args.refine > 0:
        raise ValueError(f"--refine: expected a factor > 0, got {args.refine}")
    fitted = read_fit(args.checkpoint, device=args.device)
    if args.refine:
        grid = fitted.grid.refined(args.refine)
    dmap = fitted.predict(
        grid,
        samples=args.samples,
        keep_samples=args.keep_samples,
        cell_variance=args.cell_variance,
        seed=args.seed,
        progress=not args.quiet,
    )
    path = write_map(dmap, args.out, overwrite=args.overwrite)
    print(f"wrote {path}: {dmap!r}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from ..io import read_map
    from ..pipeline import write_figures

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is a file; expected an output folder")
    dmap = read_map(args.map)
    written = write_figures(dmap, out, distances=args.distances, sightlines=args.sightline, overwrite=args.overwrite)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..io import read_map

    dmap = read_map(args.map)
    print(repr(dmap))
    print(json.dumps({k: v for k, v in dmap.meta.items() if k != "run_config"}, indent=2, default=str))
    return 0


def cmd_fetch_gaia(args: argparse.Namespace) -> int:
    from ..catalog import GaiaCuts, Region, adql_query, fetch_gaia_table, sky_chunks, write_gaia_table

    region = Region(l=args.l, b=args.b, d=args.d).padded(args.padding, args.padding_fraction)
    given = {
        "min_parallax_over_error": args.min_parallax_over_error,
        "max_ruwe": args.max_ruwe,
        "max_g_mag": args.max_g_mag,
        "libnames": args.libname,
        "where": args.where,
    }
    cuts = GaiaCuts(**{k: v for k, v in given.items() if v is not None})
    if args.dry_run:
        chunks = sky_chunks(region, chunk_deg=args.chunk_deg)
        print(f"{len(chunks)} sky chunk{'s' if len(chunks) > 1 else ''}; the query of the first:")
        print(adql_query(region, cuts=cuts, chunk=chunks[0], distance_from=args.distance_from))
        return 0
    out = Path(args.out)
    _check_new_file(out, args.overwrite)  # before fetching
    table = fetch_gaia_table(
        region,
        cuts=cuts,
        cache=args.cache,
        chunk_deg=args.chunk_deg,
        distance_from=args.distance_from,
        retries=args.retries,
        progress=not args.quiet,
    )
    write_gaia_table(table, out, overwrite=args.overwrite)
    print(f"wrote {len(table)} Gaia DR3 stars to {out} (chunks cached in {args.cache})")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from ..view import write_view

    source = Path(args.map)
    out = Path(args.out) if args.out else source.with_suffix(".html")
    _check_new_file(out, args.overwrite)  # before reading the map
    path = write_view(source, out, overwrite=args.overwrite, title=args.title)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser (no server needed)")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    import numpy as np
    from astropy.table import Table

    from ..io import read_map
    from ..posterior_map import PosteriorMap
    from ..query import query_table

    points = (args.l, args.b, args.d)
    if args.table and any(p is not None for p in points):
        raise ValueError("give either --table or --l/--b/--d, not both")
    if not args.table and any(p is None for p in points):
        raise ValueError("give --l, --b and --d (deg, deg, pc; comma-separated lists), or --table IN")
    if args.out:
        _check_new_file(Path(args.out), args.overwrite)  # before reading anything
    if args.table:
        table = Table.read(args.table, format=args.in_format)
        columns = tuple(args.columns.split(",")) if args.columns else (None, None, None)
        if len(columns) != 3:
            raise ValueError(f"--columns: expected three names L,B,D, got {args.columns!r}")
    else:
        try:
            l, b, d = np.broadcast_arrays(*(np.asarray(p, dtype=float) for p in points))
        except ValueError:
            sizes = ", ".join(f"--{n} {len(p)}" for n, p in zip("lbd", points, strict=True))
            raise ValueError(f"--l, --b, --d: expected lists of one common length (or of 1), got {sizes}") from None
        table = Table({"l": l, "b": b, "d": d}, units={"l": "deg", "b": "deg", "d": "pc"})
        columns = ("l", "b", "d")
    dmap = read_map(args.map)
    if not isinstance(dmap, PosteriorMap):
        raise ValueError(f"{args.map}: a HEALPix map; query the (distance, b, l) cube map (.nc or FITS cube)")
    pct = None if args.pct is None else (args.pct[0] if len(args.pct) == 1 else args.pct)
    result = query_table(
        dmap, table, columns=columns, mode=args.mode, pct=pct, integrated=not args.density, seed=args.seed
    )
    if args.out:
        result.write(args.out, format=args.format, overwrite=args.overwrite)
        logger.info("wrote %d rows to %s", len(result), args.out)
    else:
        result.write(sys.stdout, format=args.format or "ascii.ecsv")
    return 0
