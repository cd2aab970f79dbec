"""The ``dustgp`` command: ``simulate``, ``fit``, ``predict``, ``plot``, ``info``, ``view``, ``query`` and ``demo``.

Run ``dustgp SUBCOMMAND --help`` for every option. Progress goes to stderr (``--quiet`` silences it); Ctrl-C
during a fit writes the checkpoint and exits with status 130, and ``--resume`` continues from it.

Exit status: 0 done; 2 a problem with what was given (a run file, a catalogue, a grid, a missing, damaged or
existing file, a fit that cannot start or go on), reported as one line on stderr; 1 a computation that failed
otherwise, also one line; 130 interrupted (Ctrl-C), 143 terminated (SIGTERM: the checkpoint is written, no
maps). ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from ._version import __version__

__all__ = ["main"]

logger = logging.getLogger("dustgp")

#: Errors that come from what the user gave, not from the computation: exit status 2. ValueError covers
#: CatalogError, GridError, ConfigError and MapFileError; OSError covers missing, existing, unreadable and
#: unwritable files. dustgp.fitting.FitError (CheckpointError, fits that cannot start: no star on the grid) is
#: added by :func:`_user_errors` once the fitting code is loaded: it imports torch, which the commands that only
#: read a map (view, query, info, plot) never need, and whose import dominates their start-up.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError)


def _user_errors() -> tuple[type[BaseException], ...]:
    """:data:`USER_ERRORS`, and FitError when a command loaded the fitting code (only then can it be raised)."""
    fitting = sys.modules.get(f"{__package__}.fitting")
    return USER_ERRORS if fitting is None else (*USER_ERRORS, fitting.FitError)


def _axis(text: str) -> tuple[float, float, int]:
    try:
        lo, hi, n = text.split(",")
        return float(lo), float(hi), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI,N (e.g. 50,90,100), got {text!r}") from None


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info messages")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug messages")


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


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .grid import Grid
    from .io import atomic_path
    from .simulate import simulate

    out = Path(args.out)
    _check_new_file(out, args.overwrite)  # before simulating
    region = Grid(l=args.l, b=args.b, d=args.d, ghost_cells=0)
    options: dict[str, Any] = {
        "n_stars": args.n_stars,
        "structures": args.structures,
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
    sky = simulate(region, **options)
    table = sky.to_table()
    table.meta["dustgp_version"] = __version__
    table.meta["dustgp_simulate"] = json.dumps(options | {"background": sky.background})
    with atomic_path(out, args.overwrite) as tmp:
        table.write(tmp, overwrite=True, format=args.format)
    logger.info("wrote %d simulated stars to %s (columns %s)", len(table), out, ", ".join(table.colnames))
    return 0


def _status(stopped_by: str) -> int:
    """Exit status of a fit: 130 after Ctrl-C, 143 after SIGTERM (128 + the signal), 0 otherwise."""
    return {"interrupted": 130, "terminated": 143}.get(stopped_by, 0)


def _cmd_fit(args: argparse.Namespace) -> int:
    from .config import load_config
    from .pipeline import run

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


def _cmd_demo(args: argparse.Namespace) -> int:
    from .config import load_config
    from .pipeline import default_demo_config, run

    overrides: dict[str, dict[str, Any]] = {"fit": {"max_iterations": args.max_iterations}}
    if args.n_stars:
        overrides["simulate"] = {"n_stars": args.n_stars}
    config = load_config(default_demo_config(), overrides=overrides)
    result = run(config, out=args.out, resume=args.resume, overwrite=True, progress=not args.quiet)
    return _finish(result)


def _print_report(report: dict[str, Any], files: list[Path]) -> None:
    from .validation import HoldoutReport, TruthComparison

    stars = report["stars_fitted"]
    print(f"stars fitted: {stars['used']} (off grid {stars['off_grid']}, in ghost cells {stars['in_ghost_cells']})")
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
    if "truth" in report:
        print("accuracy against the truth:")
        print("  " + str(TruthComparison(**report["truth"])).replace("\n", "\n  "))
    if "holdout" in report:
        print(str(HoldoutReport(**report["holdout"])))
    print("wrote: " + ", ".join(str(f) for f in files))


def _cmd_predict(args: argparse.Namespace) -> int:
    from .grid import Grid
    from .io import check_output_path, write_map
    from .pipeline import read_fit

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


def _cmd_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from .io import read_map
    from .pipeline import write_figures

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is a file; expected an output folder")
    dmap = read_map(args.map)
    written = write_figures(dmap, out, distances=args.distances, sightlines=args.sightline, overwrite=args.overwrite)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .io import read_map

    dmap = read_map(args.map)
    print(repr(dmap))
    print(json.dumps({k: v for k, v in dmap.meta.items() if k != "run_config"}, indent=2, default=str))
    return 0


def _bounds(text: str) -> tuple[float, float]:
    try:
        lo, hi = text.split(",")
        return float(lo), float(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (e.g. 180,217), got {text!r}") from None


def _cmd_fetch_gaia(args: argparse.Namespace) -> int:
    from .gaia import GaiaCuts, Region, adql_query, fetch_gaia_table, sky_chunks, write_gaia_table

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


def _add_fetch(sub: Any) -> None:
    """The ``fetch`` command: ``dustgp fetch gaia --l LO,HI --b LO,HI --d LO,HI --out FILE``."""
    p = sub.add_parser("fetch", help="fetch the stars of a region from an archive (Gaia DR3 GSP-Phot)")
    sources = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    g = sources.add_parser(
        "gaia",
        help="Gaia DR3 stars with GSP-Phot A0 and distance (16/84 percentiles) from the ESA archive",
        description="Fetch Gaia DR3 stars with GSP-Phot extinction A0 and distance from the ESA archive, in sky "
        "chunks kept in a local cache (an interrupted fetch resumes). Needs astroquery: pip install 'dustgp[gaia]'. "
        "Read the result with dustgp.gaia.gaia_catalog(Table.read(OUT)).",
    )
    g.add_argument("--l", type=_bounds, required=True, help="LO,HI longitude, deg (e.g. 180,217)")
    g.add_argument("--b", type=_bounds, required=True, help="LO,HI latitude, deg (e.g. -25.5,-3.8)")
    g.add_argument("--d", type=_bounds, required=True, help="LO,HI distance, pc (e.g. 250,550)")
    g.add_argument("--out", required=True, help="output table (FITS, ECSV, ...: by suffix)")
    g.add_argument("--cache", default="gaia-cache", help="folder of fetched chunks (default ./gaia-cache)")
    g.add_argument("--padding", type=float, default=0.0, help="widen l and b by this much on each side, deg")
    g.add_argument("--padding-fraction", type=float, default=0.0, help="widen d by this share of each bound")
    g.add_argument("--chunk-deg", type=float, default=5.0, help="largest side of a sky chunk, deg (default 5)")
    g.add_argument(
        "--distance-from",
        choices=("gspphot", "parallax"),
        default="gspphot",
        help="select the distance range on GSP-Phot distances or on 1000/parallax (default gspphot)",
    )
    g.add_argument(
        "--min-parallax-over-error", type=float, help="parallax_over_error >= X (default 5; =-inf turns it off)"
    )
    g.add_argument("--max-ruwe", type=float, help="ruwe < X (default 1.4; inf turns it off)")
    g.add_argument("--max-g-mag", type=float, help="phot_g_mean_mag < X (default: no cut)")
    g.add_argument("--libname", action="append", help="keep this GSP-Phot library (repeatable; default all)")
    g.add_argument("--where", action="append", help="a further ADQL condition (repeatable)")
    g.add_argument("--retries", type=int, default=3, help="further attempts per chunk, backoff 2, 4, 8 s (default 3)")
    g.add_argument("--dry-run", action="store_true", help="print the number of chunks and the first query; no fetch")
    g.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    _common(g)
    g.set_defaults(func=_cmd_fetch_gaia)


#: A value such as ``-25.5,-3.8``: argparse takes it for an option unless it is glued to its flag.
_NEGATIVE_LIST = re.compile(r"^-\d*\.?\d+(?:[eE][-+]?\d+)?(?:,-?\d*\.?\d+(?:[eE][-+]?\d+)?)+$")


def _glue_negative_values(argv: list[str]) -> list[str]:
    """``["--b", "-25.5,-3.8"]`` → ``["--b=-25.5,-3.8"]``, so that ``--b -25.5,-3.8`` works as users write it."""
    out: list[str] = []
    for arg in argv:
        if out and _NEGATIVE_LIST.match(arg) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _cmd_view(args: argparse.Namespace) -> int:
    from .view import write_view

    source = Path(args.map)
    out = Path(args.out) if args.out else source.with_suffix(".html")
    _check_new_file(out, args.overwrite)  # before reading the map
    path = write_view(source, out, overwrite=args.overwrite, title=args.title)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser (no server needed)")
    return 0


def _numbers(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas (e.g. 60,61.5), got {text!r}") from None


def _cmd_query(args: argparse.Namespace) -> int:
    import numpy as np
    from astropy.table import Table

    from .dustmap import DustMap
    from .io import read_map
    from .query import query_table

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
    if not isinstance(dmap, DustMap):
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


def _add_view_and_query(sub: Any) -> None:
    """The ``view`` and ``query`` commands: a map as a page, and a map asked at positions."""
    p = sub.add_parser("view", help="write an interactive HTML page of a saved map (opens from disk, no server)")
    p.add_argument("map", help="map file (.nc or FITS cube)")
    p.add_argument("-o", "--out", help="output page (default: MAP with suffix .html)")
    p.add_argument("--title", help="page title (default: the map's extent)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    _common(p)
    p.set_defaults(func=_cmd_view)

    p = sub.add_parser(
        "query",
        help="extinction (or density) of a saved map at positions: --l/--b/--d lists, or a table in and out",
        description="Query a map the way dustmaps does (extinction from the Sun, linear within a cell; NaN outside "
        "the map). Points: --l, --b, --d as comma-separated lists (deg, deg, pc; a single value repeats). Table: "
        "--table IN with l/glon, b/glat and d/distance/dist columns (or --columns; bare numbers deg, deg, pc). "
        "The answer columns (A_mean, A_p16, ..., in_map, reliable_dist) go to --out, or as ECSV to stdout.",
    )
    p.add_argument("map", help="map file (.nc or FITS cube)")
    p.add_argument("--l", type=_numbers, help="Galactic longitude(s), deg")
    p.add_argument("--b", type=_numbers, help="Galactic latitude(s), deg")
    p.add_argument("--d", type=_numbers, help="distance(s), pc")
    p.add_argument("--table", help="input table of positions (any format astropy reads; by suffix)")
    p.add_argument("--columns", help="L,B,D column names of --table (default: l, b, d or their aliases)")
    p.add_argument("--in-format", help="astropy format of --table, e.g. ascii.csv (default: by suffix)")
    p.add_argument("--out", help="output table (default: ECSV on stdout)")
    p.add_argument("--format", help="astropy format of the output, e.g. fits, ascii.csv (default: by suffix)")
    p.add_argument(
        "--mode",
        default="mean",
        choices=("mean", "median", "std", "percentile", "random_sample", "random_sample_per_pix", "samples"),
        help="posterior summary (default mean); samples and random_sample need a map with kept samples",
    )
    p.add_argument("--pct", type=_numbers, help="percentile level(s) for --mode percentile, e.g. 16,84")
    p.add_argument("--density", action="store_true", help="density of the cell (mag/pc) instead of extinction")
    p.add_argument("--seed", type=int, help="seed of the random_sample modes")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    _common(p)
    p.set_defaults(func=_cmd_query)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dustgp",
        description="3D dust maps from stellar extinctions (Dharmawardena et al. 2022, A&A 658, A166).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "simulate", help="write a simulated star catalogue (the paper's Section 3 sky, or a realistic one)"
    )
    p.add_argument("out", help="output table (FITS, ECSV, CSV: by suffix unless --format)")
    p.add_argument("--n-stars", type=int, default=120_000, help="number of stars (default 120000)")
    p.add_argument(
        "--structures",
        choices=("random", "realistic"),
        default="random",
        help="random: --clumps Gaussian clumps (the paper); realistic: a filament, a dense core, a near sheet and "
        "a far clump over a low background (default random)",
    )
    p.add_argument("--clumps", type=int, default=3, help="number of random Gaussian overdensities (default 3)")
    p.add_argument("--background", type=float, help="background density, mag/pc (default 1.6e-3; 3e-4 for realistic)")
    p.add_argument("--empty-foreground", action="store_true", help="no dust in front of the region's near edge")
    p.add_argument(
        "--noise",
        type=float,
        default=0.1,
        help="fractional extinction noise f: sigma_A = sqrt(floor² + (f A)²) (default 0.1)",
    )
    p.add_argument("--noise-floor", type=float, default=0.0, help="extinction noise floor, mag (default 0)")
    p.add_argument(
        "--distance-errors",
        metavar="FMIN,FMAX",
        help="fractional distance errors in [FMIN, FMAX] (e.g. 0.05,0.2): distances scattered log-normally, "
        "distance_err and 16/84 percentiles reported (default: exact distances)",
    )
    p.add_argument(
        "--distance-error-model",
        choices=("log-uniform", "distance"),
        default="log-uniform",
        help="fractional errors log-uniform, or growing with distance from FMIN to FMAX (default log-uniform)",
    )
    p.add_argument(
        "--outlier-fraction", type=float, default=0.0, help="share of stars given an extinction offset (default 0)"
    )
    p.add_argument(
        "--outlier-amplitude",
        metavar="LO,HI",
        default="0.3,1.5",
        help="outlier offsets uniform in [LO, HI], mag, sigma unchanged (default 0.3,1.5)",
    )
    p.add_argument("--l", type=_axis, default=(50, 90, 100), help="LO,HI,N longitude, deg (default 50,90,100)")
    p.add_argument(
        "--b",
        type=_axis,
        default=(-10, 10, 100),
        help="LO,HI,N latitude, deg (default -10,10,100; write --b=-10,10,100)",
    )
    p.add_argument("--d", type=_axis, default=(180, 500, 115), help="LO,HI,N distance, pc (default 180,500,115)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--format", default=None, help="astropy table format, e.g. fits, ascii.ecsv")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    _common(p)
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("fit", help="fit a run file (TOML) and write the map, figures and report.json")
    p.add_argument("config", help="TOML run file with [catalog] or [simulate], [grid], [fit], [predict], [output]")
    p.add_argument("--out", help="output folder (default: [output] dir, else ./dustgp-run)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/fit.ckpt if present")
    p.add_argument("--overwrite", action="store_true", help="replace existing map files in the output folder")
    p.add_argument("--max-iterations", type=int, help="override [fit] max_iterations")
    p.add_argument("--seed", type=int, help="override [fit] seed")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda (overrides [fit] device)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    _common(p)
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("predict", help="predict a map from a fit checkpoint on any grid")
    p.add_argument("checkpoint", help="fit checkpoint (fit.ckpt)")
    p.add_argument("out", help="output map (.nc NetCDF, .fits FITS cube)")
    p.add_argument("--l", type=_axis, help="LO,HI,N longitude, deg")
    p.add_argument("--b", type=_axis, help="LO,HI,N latitude, deg (write --b=-10,10,100 when LO is negative)")
    p.add_argument("--d", type=_axis, help="LO,HI,N distance, pc")
    p.add_argument("--ghost-cells", type=int, default=0, help="foreground cells (0: the training grid's)")
    p.add_argument("--refine", type=float, help="refine the training grid this many times (default 2.5)")
    p.add_argument("--samples", type=int, default=200, help="posterior samples (default 200)")
    p.add_argument(
        "--keep-samples",
        type=int,
        help="joint samples stored in the map, for query modes samples/random_sample (default 12; 0: none; "
        "each adds about 3.4 bytes per cell to a NetCDF map)",
    )
    p.add_argument(
        "--cell-variance",
        action="store_true",
        help="add each cell's conditional variance diag(K_xx - Q_xx) as independent noise on phi: wider bands, "
        "but extinction biased high where the inducing points leave cells loose (off by default)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the posterior draws (default 0)")
    p.add_argument("--device", help="torch device (default: the fit's)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    _common(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("plot", help="write the standard figures of a saved map")
    p.add_argument("map", help="map file (.nc or .fits)")
    p.add_argument("--out", default="figures", help="output folder (default ./figures)")
    p.add_argument("--distances", type=float, nargs="+", help="distances (pc) of the density slices")
    p.add_argument("--sightline", type=float, nargs=2, action="append", metavar=("L", "B"), help="profile at L B (deg)")
    p.add_argument("--overwrite", action="store_true", help="replace existing figures of the same names")
    _common(p)
    p.set_defaults(func=_cmd_plot)

    _add_fetch(sub)
    _add_view_and_query(sub)

    p = sub.add_parser("info", help="describe a saved map and its provenance")
    p.add_argument("map", help="map file (.nc or .fits)")
    _common(p)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="the paper's Section 3 experiment end to end, with accuracy against the truth")
    p.add_argument("--out", default="demo-output", help="output folder (default ./demo-output)")
    p.add_argument("--n-stars", type=int, help="number of simulated stars (default 120000)")
    p.add_argument("--max-iterations", type=int, help="cap on training iterations")
    p.add_argument("--resume", action="store_true", help="continue from OUT/fit.ckpt if present")
    _common(p)
    p.set_defaults(func=_cmd_demo)
    return parser


def _one_line(exc: BaseException) -> str:
    """An exception as one line: multi-line messages (a catalogue's bad-row report) joined with '; '."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        lines = [f"missing entry {exc.args[0]!r}"]
    if not lines:
        return type(exc).__name__
    head, rest = lines[0], lines[1:]
    return head + (" " if head.endswith(":") else "; ") + "; ".join(rest) if rest else head


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """Library warnings (astropy's, ...) as one log line each, not file, line and source text."""
    logging.getLogger("py.warnings").warning("%s: %s", category.__name__, _one_line(Warning(str(message))))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_glue_negative_values(sys.argv[1:] if argv is None else list(argv)))
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    with warnings.catch_warnings():
        if not args.verbose:
            warnings.showwarning = _show_warning
        try:
            return args.func(args)
        except KeyboardInterrupt:
            logger.error("interrupted")
            return 130
        except _user_errors() as exc:
            logger.error("%s", _one_line(exc), exc_info=exc if args.verbose else None)
            return 2
        except Exception as exc:
            hint = "" if args.verbose else " (run with -v for the traceback)"
            logger.error(
                "failed: %s: %s%s", type(exc).__name__, _one_line(exc), hint, exc_info=exc if args.verbose else None
            )
            return 1


if __name__ == "__main__":
    sys.exit(main())
