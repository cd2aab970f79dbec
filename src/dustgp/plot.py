"""Figures of maps, sightlines and fits (matplotlib; safe under the Agg backend).

Every function takes ``ax=None`` (a new figure is made when none is given) and returns what it drew; nothing
calls ``plt.show()``. Sky images put Galactic longitude increasing to the *left*: on a WCSAxes (made from
:func:`dustgp.io.celestial_wcs`, the WCS of the FITS products) the image is stored with the l axis reversed;
on plain Axes the x limits run from the largest to the smallest longitude.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import astropy.units as u
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.ticker import FuncFormatter

from ._units import distance_pc
from .io import celestial_wcs
from .query import extinction_plane

if TYPE_CHECKING:
    from matplotlib.collections import PolyCollection
    from matplotlib.container import BarContainer
    from matplotlib.contour import QuadContourSet
    from matplotlib.lines import Line2D

    from .emission import EmissionRatio
    from .grid import Grid
    from .posterior_map import PosteriorMap

__all__ = [
    "EmissionRatioArtists",
    "ResidualArtists",
    "SightlineArtists",
    "density_slice",
    "elbo_history",
    "emission_ratio_map",
    "extinction_map",
    "format_degrees",
    "residual_histogram",
    "sightline_profile",
    "sky_axes",
    "truth_comparison",
]


#: Decimals of a coordinate in titles and file names: 1e-6 deg (3.6 mas) is finer than any map cell, and hides
#: the rounding noise of computed positions (the middle of -10..10 deg comes out as 4.4e-16).
DEGREE_DECIMALS = 6


def format_degrees(value: float) -> str:
    """A coordinate in deg for titles and file names: rounded to ``DEGREE_DECIMALS``, no ``-0``, ``:g`` style."""
    return f"{round(float(value), DEGREE_DECIMALS) + 0.0:g}"


class SightlineArtists(NamedTuple):
    """What :func:`sightline_profile` drew: density on ``ax``, extinction on the twin ``ax_extinction``."""

    density: Line2D
    density_band: PolyCollection | None
    extinction: Line2D
    extinction_band: PolyCollection | None
    ax_extinction: Axes


class ResidualArtists(NamedTuple):
    """What :func:`residual_histogram` drew."""

    histogram: BarContainer
    gaussian: Line2D


class EmissionRatioArtists(NamedTuple):
    """What :func:`emission_ratio_map` drew."""

    image: AxesImage
    contours: QuadContourSet | None


# ----- sky images -------------------------------------------------------------------------------------------
def sky_axes(grid: Grid, *, fig: Figure | None = None, subplot: Any = 111) -> Axes:
    """A WCSAxes for the grid's (l, b) plane (longitude increasing to the left), labelled in deg."""
    fig = plt.figure() if fig is None else fig
    args = subplot if isinstance(subplot, tuple) else (subplot,)
    ax = fig.add_subplot(*args, projection=celestial_wcs(grid))
    ax.coords[0].set_axislabel("Galactic longitude l (deg)")
    ax.coords[1].set_axislabel("Galactic latitude b (deg)")
    ax.coords[0].set_major_formatter("d.d")
    ax.coords[1].set_major_formatter("d.d")
    return ax


def _is_wcs_axes(ax: Axes) -> bool:
    return hasattr(ax, "wcs") and hasattr(ax, "coords")


def _sky_image(
    grid: Grid, plane: np.ndarray, ax: Axes | None, *, colorbar: bool, label: str, **imshow: Any
) -> AxesImage:
    """Draw a (n_b, n_l) plane with longitude increasing to the left."""
    ax = sky_axes(grid) if ax is None else ax
    imshow.setdefault("origin", "lower")
    imshow.setdefault("interpolation", "nearest")
    if _is_wcs_axes(ax):
        # pixel columns in the WCS's order: l reversed
        image = ax.imshow(plane[:, ::-1], **imshow)
    else:
        l_edges, b_edges = grid.l_edges, grid.b_edges
        extent = (l_edges[-1], l_edges[0], b_edges[0], b_edges[-1])  # left = largest l
        image = ax.imshow(plane[:, ::-1], extent=extent, aspect="auto", **imshow)
        ax.set_xlim(l_edges[-1], l_edges[0])
        # edges may be unwrapped past 360 (a map crossing l = 0): label longitudes in [0, 360)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x % 360.0:g}"))
        ax.set_xlabel("Galactic longitude l (deg)")
        ax.set_ylabel("Galactic latitude b (deg)")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=label)
    return image


def _distance_pc(distance: float | u.Quantity, where: str) -> float:
    return float(distance_pc(distance, where))


def density_slice(
    dmap: PosteriorMap,
    distance: float | u.Quantity,
    *,
    q: float | None = 50.0,
    ax: Axes | None = None,
    log: bool = True,
    colorbar: bool = True,
    **imshow: Any,
) -> AxesImage:
    """Density in the distance cell holding ``distance``, on the sky.

    Parameters
    ----------
    dmap : PosteriorMap
    distance : float or astropy.units.Quantity
        pc for a bare number.
    q : float or None
        Posterior percentile to show (0-100); ``None`` for the mean.
    ax : matplotlib.axes.Axes, optional
        Default: a new WCSAxes (:func:`sky_axes`).
    log : bool
        Logarithmic colour scale.
    colorbar : bool
    **imshow
        Passed to ``imshow`` (``cmap``, ``vmin``, ...).

    Returns
    -------
    matplotlib.image.AxesImage
    """
    grid = dmap.grid
    d = _distance_pc(distance, "density_slice: distance")
    i_d = grid.distance_cell(d)
    plane = dmap.density(q).to_value(u.mag / u.pc)[i_d]
    if log and "norm" not in imshow:
        positive = plane[plane > 0]
        if positive.size:
            vmin, vmax = imshow.pop("vmin", positive.min()), imshow.pop("vmax", plane.max())
            imshow["norm"] = LogNorm(vmin=vmin, vmax=vmax)
    imshow.setdefault("cmap", "magma")
    what = "mean" if q is None else f"{q:g}th percentile"
    image = _sky_image(grid, plane, ax, colorbar=colorbar, label=f"density, {what} (mag/pc)", **imshow)
    image.axes.set_title(f"{grid.d_edges[i_d]:.0f}-{grid.d_edges[i_d + 1]:.0f} pc")
    return image


def extinction_map(
    dmap: PosteriorMap,
    distance: float | u.Quantity | None = None,
    *,
    mode: str = "median",
    ax: Axes | None = None,
    colorbar: bool = True,
    **imshow: Any,
) -> AxesImage:
    """Extinction from the Sun to ``distance`` (default ``d_max``) on the sky.

    Parameters
    ----------
    dmap : PosteriorMap
    distance : float or astropy.units.Quantity, optional
        pc for a bare number; the extinction is continuous in distance (see :mod:`dustgp.query`).
    mode : {"median", "mean", "std"}
    ax, colorbar, **imshow
        As in :func:`density_slice`.

    Returns
    -------
    matplotlib.image.AxesImage
    """
    grid = dmap.grid
    d = grid.d_max if distance is None else _distance_pc(distance, "extinction_map: distance")
    plane = extinction_plane(dmap, d * u.pc, mode=mode)
    imshow.setdefault("cmap", "viridis")
    image = _sky_image(grid, plane, ax, colorbar=colorbar, label=f"A to {d:.0f} pc, {mode} (mag)", **imshow)
    return image


def emission_ratio_map(
    ratio_result: EmissionRatio,
    dmap: PosteriorMap,
    *,
    ax: Axes | None = None,
    contours: int | Sequence[float] | None = 5,
    colorbar: bool = True,
    **imshow: Any,
) -> EmissionRatioArtists:
    """The normalised extinction/emission ratio (paper Sect. 8) with contours of the model extinction.

    Parameters
    ----------
    ratio_result : EmissionRatio
        From :func:`dustgp.emission.emission_ratio`.
    dmap : PosteriorMap
        The map it was computed from (for the grid).
    contours : int or sequence of float or None
        Number of extinction contour levels, explicit levels (mag), or None for none.

    Returns
    -------
    EmissionRatioArtists
        The ratio image and the extinction contour set.
    """
    grid = dmap.grid
    imshow.setdefault("cmap", "RdBu_r")
    imshow.setdefault("norm", LogNorm(vmin=0.25, vmax=4.0))
    image = _sky_image(grid, ratio_result.ratio, ax, colorbar=colorbar, label="(A / E) / median", **imshow)
    axes = image.axes
    drawn = None
    if contours is not None:
        extinction = ratio_result.extinction[:, ::-1]
        kwargs = {"colors": "k", "linewidths": 0.7}
        if _is_wcs_axes(axes):
            drawn = axes.contour(extinction, levels=contours, **kwargs)
        else:
            l_c = grid.unwrap_l(grid.l_centers)
            drawn = axes.contour(l_c, grid.b_centers, ratio_result.extinction, levels=contours, **kwargs)
            axes.set_xlim(grid.l_edges[-1], grid.l_edges[0])
    return EmissionRatioArtists(image, drawn)


# ----- sightlines and fits ----------------------------------------------------------------------------------
def _band(dmap: PosteriorMap, which: str, q: float) -> np.ndarray | None:
    """Percentile ``q`` of density or extinction when stored or computable from samples, else None."""
    try:
        return getattr(dmap, which)(q).value
    except ValueError:
        return None


def sightline_profile(
    dmap: PosteriorMap, l: float | u.Quantity, b: float | u.Quantity, *, ax: Axes | None = None
) -> SightlineArtists:
    """Density (left axis, steps) and extinction (right axis, continuous) along one sightline, with 16-84%
    bands.

    Parameters
    ----------
    dmap : PosteriorMap
    l, b : float or astropy.units.Quantity
        Galactic coordinates of the sightline, deg for bare numbers; the pixel holding them is shown.
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    SightlineArtists
    """
    grid = dmap.grid
    l_deg = float(u.Quantity(l, u.deg).to_value(u.deg))
    b_deg = float(u.Quantity(b, u.deg).to_value(u.deg))
    _, i_b, i_l = grid.locate(np.array([l_deg]), np.array([b_deg]), np.array([grid.d_max]))
    if i_l[0] < 0:
        raise ValueError(f"sightline_profile: (l, b) = ({l_deg}, {b_deg}) deg is outside the map")
    column = np.s_[..., i_b[0], i_l[0]]
    ax = plt.figure().add_subplot() if ax is None else ax
    edges = grid.d_edges
    rho = dmap.density_mean[column]
    # steps: one value per cell, repeated at the far edge so the last cell is drawn
    (density_line,) = ax.step(edges, np.append(rho, rho[-1]), where="post", color="C0", label="density")
    lo, hi = _band(dmap, "density", 16.0), _band(dmap, "density", 84.0)
    density_band = None
    if lo is not None and hi is not None:
        lo_c, hi_c = lo[column], hi[column]
        density_band = ax.fill_between(
            edges,
            np.append(lo_c, lo_c[-1]),
            np.append(hi_c, hi_c[-1]),
            step="post",
            color="C0",
            alpha=0.3,
            label="density 16-84%",
        )
    ax.set_xlabel("distance (pc)")
    ax.set_ylabel("density (mag/pc)", color="C0")
    if grid.ghost_cells:
        ax.axvspan(0, grid.d_min, color="0.9", zorder=0, label="ghost cells")
    ax2 = ax.twinx()
    a = np.append(0.0, dmap.extinction_mean[column])  # at the cell edges, zero at the first edge
    (extinction_line,) = ax2.plot(edges, a, color="C3", label="extinction (mean)")
    lo, hi = _band(dmap, "extinction", 16.0), _band(dmap, "extinction", 84.0)
    extinction_band = None
    if lo is not None and hi is not None:
        extinction_band = ax2.fill_between(
            edges,
            np.append(0.0, lo[column]),
            np.append(0.0, hi[column]),
            color="C3",
            alpha=0.2,
            label="extinction 16-84%",
        )
    ax2.set_ylabel("extinction (mag)", color="C3")
    ax.set_xlim(0, grid.d_max)
    ax.set_title(f"l = {format_degrees(l_deg)}°, b = {format_degrees(b_deg)}°")
    return SightlineArtists(density_line, density_band, extinction_line, extinction_band, ax2)


def residual_histogram(
    A_obs: np.ndarray, A_pred: np.ndarray, sigma: np.ndarray, *, ax: Axes | None = None, bins: int = 60
) -> ResidualArtists:
    """Histogram of standardised residuals (A_obs - A_pred) / sigma with the unit Gaussian over it.

    Parameters
    ----------
    A_obs, A_pred, sigma : array_like, shape (n_stars,)
        Observed and predicted extinction and the uncertainty, mag.
    ax : matplotlib.axes.Axes, optional
    bins : int

    Returns
    -------
    ResidualArtists
    """
    z = (np.asarray(A_obs, float) - np.asarray(A_pred, float)) / np.asarray(sigma, float)
    z = z[np.isfinite(z)]
    ax = plt.figure().add_subplot() if ax is None else ax
    _, _, patches = ax.hist(z, bins=bins, density=True, color="0.6", label=f"{z.size} stars")
    grid = np.linspace(min(-4.0, z.min(initial=-4.0)), max(4.0, z.max(initial=4.0)), 400)
    (gaussian,) = ax.plot(grid, np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi), color="C3", label="N(0, 1)")
    ax.set_xlabel("(A_obs - A_pred) / σ")
    ax.set_ylabel("density")
    ax.legend()
    return ResidualArtists(patches, gaussian)  # type: ignore[arg-type]


def predictive_check(
    normalised_residual: np.ndarray, flagged: np.ndarray, *, ax: Axes | None = None, bins: int = 60
) -> ResidualArtists:
    """The stars' posterior predictive check: normalised residuals ``Φ⁻¹(PIT)`` against N(0, 1).

    Parameters
    ----------
    normalised_residual : array_like, shape (n_stars,)
        :attr:`dustgp.fitting.Fit.star_checks` ``["normalised_residual"]`` (dimensionless; N(0, 1) when the
        model and the quoted uncertainties are right).
    flagged : array_like of bool, shape (n_stars,)
        Stars flagged as outliers, drawn separately.
    ax : matplotlib.axes.Axes, optional
    bins : int

    Returns
    -------
    ResidualArtists
    """
    z = np.asarray(normalised_residual, float)
    bad = np.asarray(flagged, bool)
    ok = np.isfinite(z)
    ax = plt.figure().add_subplot() if ax is None else ax
    edges = np.linspace(-5.0, 5.0, bins + 1)
    clipped = np.clip(z[ok], -5.0, 5.0)
    _, _, patches = ax.hist(
        [clipped[~bad[ok]], clipped[bad[ok]]],
        bins=edges,
        stacked=True,
        density=True,
        color=["0.6", "C1"],
        label=[f"{int(np.sum(~bad[ok]))} stars", f"{int(np.sum(bad[ok]))} flagged outliers"],
    )
    grid = np.linspace(-5.0, 5.0, 400)
    (gaussian,) = ax.plot(grid, np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi), color="C3", label="N(0, 1)")
    inside = float(np.mean(np.abs(z[ok]) < 0.9945)) if ok.any() else float("nan")  # Φ⁻¹(0.84) = 0.9945
    ax.set_title(f"inside the predictive 16-84% interval: {inside:.1%} (nominal 68%)", fontsize=9)
    ax.set_xlabel("normalised residual Φ⁻¹(PIT)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return ResidualArtists(patches, gaussian)  # type: ignore[arg-type]


def elbo_history(history: np.ndarray | Sequence[float], *, ax: Axes | None = None, log: bool | None = None) -> Line2D:
    """The loss (negative ELBO) per iteration.

    Parameters
    ----------
    history : array_like, shape (n_iterations,)
        Loss per iteration.
    ax : matplotlib.axes.Axes, optional
    log : bool, optional
        Logarithmic y axis; default when every value is positive.

    Returns
    -------
    matplotlib.lines.Line2D
    """
    values = np.asarray(history, dtype=float)
    ax = plt.figure().add_subplot() if ax is None else ax
    (line,) = ax.plot(np.arange(1, values.size + 1), values, color="C0")
    if log if log is not None else bool(values.size and np.all(values > 0)):
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (-ELBO)")
    return line


def truth_comparison(
    dmap: PosteriorMap,
    truth_density: np.ndarray | Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    distances: Sequence[float] | u.Quantity,
    *,
    fig: Figure | None = None,
) -> Figure:
    """Truth, predicted median and their ratio at several distances (the paper's Fig. 2 layout).

    Parameters
    ----------
    dmap : PosteriorMap
    truth_density : numpy.ndarray, shape (n_d, n_b, n_l), or callable
        True density, mag/pc: on ``dmap.grid``, or a function ``f(l, b, d)`` (deg, deg, pc) evaluated at the
        cell centres (e.g. :meth:`dustgp.simulate.SimulatedSky.density_at`).
    distances : sequence of float or astropy.units.Quantity
        One row per distance, pc for bare numbers (the cell holding each is shown).
    fig : matplotlib.figure.Figure, optional

    Returns
    -------
    matplotlib.figure.Figure
        Rows = distances; columns = truth, predicted median (same colour scale), predicted / truth.
    """
    grid = dmap.grid
    if callable(truth_density):
        l, b, d = grid.cell_centers_lbd()
        truth = np.asarray(truth_density(l, b, d), dtype=float)
    else:
        truth = np.asarray(truth_density, dtype=float)
    if truth.shape != grid.shape:
        raise ValueError(f"truth_density: expected shape {grid.shape}, got {truth.shape}")
    median = dmap.density(50.0).to_value(u.mag / u.pc)
    d_list = np.atleast_1d(distance_pc(distances, "truth_comparison: distances"))
    fig = plt.figure(figsize=(15, 3.6 * d_list.size), layout="constrained") if fig is None else fig
    for row, d in enumerate(d_list):
        i_d = grid.distance_cell(d)
        t, m = truth[i_d], median[i_d]
        positive = np.concatenate([t[t > 0], m[m > 0]])
        norm = LogNorm(positive.min(), positive.max()) if positive.size else None
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = m / t
        panels = (
            (t, "truth", {"norm": norm, "cmap": "magma"}),
            (m, "predicted median", {"norm": norm, "cmap": "magma"}),
            (ratio, "predicted / truth", {"norm": LogNorm(0.5, 2.0), "cmap": "RdBu_r"}),
        )
        for col, (plane, title, style) in enumerate(panels):
            ax = sky_axes(grid, fig=fig, subplot=(d_list.size, 3, 3 * row + col + 1))
            _sky_image(grid, plane, ax, colorbar=True, label="mag/pc" if col < 2 else "", **style)
            ax.set_title(f"{title}, {grid.d_edges[i_d]:.0f}-{grid.d_edges[i_d + 1]:.0f} pc", fontsize=9)
    return fig
