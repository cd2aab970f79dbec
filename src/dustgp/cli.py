"""The ``dustgp`` command: ``simulate``, ``fit``, ``predict``, ``plot``, ``info`` and ``demo``.

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
import sys
import warnings
from pathlib import Path
from typing import Any

from . import __version__
from .fitting import FitError

__all__ = ["main"]

logger = logging.getLogger("dustgp")

#: Errors that come from what the user gave, not from the computation: exit status 2. ValueError covers
#: CatalogError, GridError, ConfigError and MapFileError; OSError covers missing, existing, unreadable and
#: unwritable files; FitError covers CheckpointError and fits that cannot start (no star on the grid).
USER_ERRORS = (ValueError, KeyError, OSError, FitError)


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


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .grid import Grid
    from .io import atomic_path
    from .simulate import simulate

    out = Path(args.out)
    _check_new_file(out, args.overwrite)  # before simulating
    region = Grid(l=args.l, b=args.b, d=args.d, ghost_cells=0)
    sky = simulate(region, n_stars=args.n_stars, n_clumps=args.clumps, noise=args.noise, seed=args.seed)
    table = sky.catalog.to_table()
    table["A0_true"] = sky.true_extinction
    table.meta["dustgp_seed"] = args.seed
    table.meta["dustgp_version"] = __version__
    table.meta["clumps"] = json.dumps([c.__dict__ for c in sky.clumps])
    with atomic_path(out, args.overwrite) as tmp:
        table.write(tmp, overwrite=True, format=args.format)
    logger.info("wrote %d simulated stars to %s (columns l, b, distance, A0, A0_err, A0_true)", len(table), out)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dustgp",
        description="3D dust maps from stellar extinctions (Dharmawardena et al. 2022, A&A 658, A166).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("simulate", help="write a simulated star catalogue (the paper's Section 3 sky)")
    p.add_argument("out", help="output table (FITS, ECSV, CSV: by suffix unless --format)")
    p.add_argument("--n-stars", type=int, default=120_000, help="number of stars (default 120000)")
    p.add_argument("--clumps", type=int, default=3, help="number of Gaussian overdensities (default 3)")
    p.add_argument("--noise", type=float, default=0.1, help="fractional extinction noise (default 0.1)")
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
    p.add_argument("--keep-samples", type=int, default=0, help="samples stored in the map (default 0)")
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
    args = build_parser().parse_args(argv)
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
        except USER_ERRORS as exc:
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
