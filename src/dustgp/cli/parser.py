"""The ``dustgp`` command line: every subcommand with its options and help, and the argument types that check
values as they are read (an axis ``LO,HI,N``, a pair of bounds, a list of numbers)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from .._version import __version__
from ..grid import DEFAULT_REFINEMENT
from .commands import (
    cmd_demo,
    cmd_fetch_gaia,
    cmd_fit,
    cmd_info,
    cmd_plot,
    cmd_predict,
    cmd_query,
    cmd_simulate,
    cmd_view,
)

__all__ = ["build_parser", "glue_negative_values"]


#: A value such as ``-25.5,-3.8``: argparse takes it for an option unless it is glued to its flag.
_NEGATIVE_LIST = re.compile(r"^-\d*\.?\d+(?:[eE][-+]?\d+)?(?:,-?\d*\.?\d+(?:[eE][-+]?\d+)?)+$")


def _comma_numbers(kinds: tuple[type, ...], expected: str) -> Callable[[str], tuple]:
    """An argparse type reading ``len(kinds)`` comma-separated numbers, each converted by its kind."""

    def parse(text: str) -> tuple:
        parts = text.split(",")
        try:
            if len(parts) != len(kinds):
                raise ValueError(text)
            return tuple(kind(part) for kind, part in zip(kinds, parts, strict=True))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return parse


_axis = _comma_numbers((float, float, int), "LO,HI,N (e.g. 50,90,100)")
_lengths = _comma_numbers((float, float, float), "GX,GY,GZ in pc (e.g. 30,30,25)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info messages")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug messages")


def _bounds(text: str) -> tuple[float, float]:
    try:
        lo, hi = text.split(",")
        return float(lo), float(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (e.g. 180,217), got {text!r}") from None


def _numbers(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas (e.g. 60,61.5), got {text!r}") from None


def _add_fetch(sub: Any) -> None:
    """The ``fetch`` command: ``dustgp fetch gaia --l LO,HI --b LO,HI --d LO,HI --out FILE``."""
    p = sub.add_parser("fetch", help="fetch the stars of a region from an archive (Gaia DR3 GSP-Phot)")
    sources = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    g = sources.add_parser(
        "gaia",
        help="Gaia DR3 stars with GSP-Phot A0 and distance (16/84 percentiles) from the ESA archive",
        description="Fetch Gaia DR3 stars with GSP-Phot extinction A0 and distance from the ESA archive, in sky "
        "chunks kept in a local cache (an interrupted fetch resumes). Needs astroquery: pip install 'dustgp[gaia]'. "
        "Read the result with dustgp.catalog.gaia_catalog(Table.read(OUT)).",
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
    g.set_defaults(func=cmd_fetch_gaia)


def _add_view_and_query(sub: Any) -> None:
    """The ``view`` and ``query`` commands: a map as a page, and a map asked at positions."""
    p = sub.add_parser("view", help="write an interactive HTML page of a saved map (opens from disk, no server)")
    p.add_argument("map", help="map file (.nc or FITS cube)")
    p.add_argument("-o", "--out", help="output page (default: MAP with suffix .html)")
    p.add_argument("--title", help="page title (default: the map's extent)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    _common(p)
    p.set_defaults(func=cmd_view)

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
    p.set_defaults(func=cmd_query)


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
        choices=("random", "realistic", "gaussian-field"),
        default="random",
        help="random: --clumps Gaussian clumps (the paper); realistic: a filament, a dense core, a near sheet and "
        "a far clump over a low background; gaussian-field: a draw from the model's own prior about the background "
        "(default random)",
    )
    p.add_argument(
        "--field-length-scale",
        type=_lengths,
        metavar="GX,GY,GZ",
        help="gaussian-field: RBF scale lengths in heliocentric x, y, z, pc (default 30,30,25)",
    )
    p.add_argument("--field-scale", type=float, help="gaussian-field: variance of log10 density, dex² (default 0.1)")
    p.add_argument(
        "--structure-size",
        type=float,
        default=1.0,
        help="realistic structures this many times as wide, peaks divided by it, columns kept (default 1)",
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
        "distance_err and 16/84 percentiles reported (default: exact distances); these are measurements: "
        'fit them with distance_kind = "measurement" in [catalog]',
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
    p.set_defaults(func=cmd_simulate)

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
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("predict", help="predict a map from a fit checkpoint on any grid")
    p.add_argument("checkpoint", help="fit checkpoint (fit.ckpt)")
    p.add_argument("out", help="output map (.nc NetCDF, .fits FITS cube)")
    p.add_argument("--l", type=_axis, help="LO,HI,N longitude, deg")
    p.add_argument("--b", type=_axis, help="LO,HI,N latitude, deg (write --b=-10,10,100 when LO is negative)")
    p.add_argument("--d", type=_axis, help="LO,HI,N distance, pc")
    p.add_argument("--ghost-cells", type=int, default=0, help="foreground cells (0: the training grid's)")
    p.add_argument(
        "--refine", type=float, help=f"refine the training grid this many times (default {DEFAULT_REFINEMENT:g})"
    )
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
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("plot", help="write the standard figures of a saved map")
    p.add_argument("map", help="map file (.nc or .fits)")
    p.add_argument("--out", default="figures", help="output folder (default ./figures)")
    p.add_argument("--distances", type=float, nargs="+", help="distances (pc) of the density slices")
    p.add_argument("--sightline", type=float, nargs=2, action="append", metavar=("L", "B"), help="profile at L B (deg)")
    p.add_argument("--overwrite", action="store_true", help="replace existing figures of the same names")
    _common(p)
    p.set_defaults(func=cmd_plot)

    _add_fetch(sub)
    _add_view_and_query(sub)

    p = sub.add_parser("info", help="describe a saved map and its provenance")
    p.add_argument("map", help="map file (.nc or .fits)")
    _common(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="the paper's Section 3 experiment end to end, with accuracy against the truth")
    p.add_argument("--out", default="demo-output", help="output folder (default ./demo-output)")
    p.add_argument("--n-stars", type=int, help="number of simulated stars (default 120000)")
    p.add_argument("--max-iterations", type=int, help="cap on training iterations")
    p.add_argument("--resume", action="store_true", help="continue from OUT/fit.ckpt if present")
    _common(p)
    p.set_defaults(func=cmd_demo)
    return parser


def glue_negative_values(argv: list[str]) -> list[str]:
    """``["--b", "-25.5,-3.8"]`` → ``["--b=-25.5,-3.8"]``, so that ``--b -25.5,-3.8`` works as users write it."""
    out: list[str] = []
    for arg in argv:
        if out and _NEGATIVE_LIST.match(arg) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out
