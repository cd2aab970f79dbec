"""Drawing a simulated sky: :func:`simulate` (any truth, any observation options) and :func:`paper_experiment`
(the paper's Section 3 sky). See :mod:`dustgp.simulate`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ..catalog import MIN_EXTINCTION_ERR, Catalog
from ..grid import Grid
from .field import GaussianField
from .observe import (
    DistanceErrorModel,
    _check_options,
    _draw_outliers,
    _draw_positions,
    _scatter_distances,
    _star_extinction,
)
from .sky import SimulatedSky
from .structures import Structure
from .truths import BACKGROUND, REALISTIC_BACKGROUND, _random_clumps, realistic_region

__all__ = ["StructureSpec", "paper_experiment", "simulate"]

StructureSpec = Literal["random", "realistic", "gaussian-field"]
#: The Gaussian field's default scale lengths (pc, heliocentric x, y, z) and variance of log10 density (dex²): a few
#: training cells of the paper's Section 3 grid long, 0.3 dex at 1 sigma.
FIELD_LENGTH_SCALE = (30.0, 30.0, 25.0)
FIELD_SCALE = 0.1


def _choose_structures(
    structures: StructureSpec | tuple[Structure, ...],
    region: Grid,
    rng: np.random.Generator,
    *,
    n_clumps: int,
    clump_sigma: tuple[float, float],
    clump_peak: tuple[float, float],
    size: float = 1.0,
    field: dict[str, Any] | None = None,
) -> tuple[Structure, ...]:
    """The overdensities ``structures`` names (see :func:`simulate`); only ``'random'`` draws from ``rng``.
    ``field``: the keywords of :func:`_field` but ``region``, for ``'gaussian-field'``."""
    if size != 1.0 and structures != "realistic":
        raise ValueError(f"structure_size: only for structures='realistic', got structures={structures!r}")
    if structures == "random":
        return _random_clumps(region, rng, n_clumps=n_clumps, clump_sigma=clump_sigma, clump_peak=clump_peak)
    if structures == "realistic":
        return realistic_region(region, size=size)
    if structures == "gaussian-field" and field is not None:
        return (_field(region, **field),)
    if not isinstance(structures, str) and all(isinstance(s, Structure) for s in structures):
        return tuple(structures)
    raise ValueError(
        f"structures: expected 'random', 'realistic', 'gaussian-field' or a tuple of Structure, got {structures!r}"
    )


def _field(
    region: Grid, background: float, length_scale: tuple[float, float, float], scale: float, seed: int
) -> GaussianField:
    """The Gaussian field of ``structures='gaussian-field'`` behind ``region.d_min``; its features from a stream of
    their own (the third spawned from ``seed``), so that the stars are those of any other sky of the seed."""
    field_seed = int(np.random.SeedSequence(seed).spawn(3)[2].generate_state(1)[0])
    try:
        return GaussianField(background, tuple(length_scale), scale, seed=field_seed, d_min=region.d_min)  # type: ignore[arg-type]
    except ValueError as error:  # "length_scale: ..." -> "field_length_scale: ...", the name simulate takes
        raise ValueError(f"field_{error}") from None


def simulate(
    region: Grid,
    *,
    n_stars: int = 120_000,
    structures: StructureSpec | tuple[Structure, ...] = "random",
    structure_size: float = 1.0,
    n_clumps: int = 3,
    background: float | None = None,
    clump_sigma: tuple[float, float] = (20.0, 35.0),
    clump_peak: tuple[float, float] = (8e-3, 2.4e-2),
    noise: float = 0.1,
    noise_floor: float = 0.0,
    distance_errors: tuple[float, float] | None = None,
    distance_error_model: DistanceErrorModel = "log-uniform",
    outlier_fraction: float = 0.0,
    outlier_amplitude: tuple[float, float] = (0.3, 1.5),
    foreground: bool = True,
    field_length_scale: tuple[float, float, float] = FIELD_LENGTH_SCALE,
    field_scale: float = FIELD_SCALE,
    seed: int = 0,
) -> SimulatedSky:
    r"""Draw a simulated sky over ``region``.

    With only ``region``, ``n_stars``, ``n_clumps``, ``clump_*``, ``noise``, ``foreground`` and ``seed`` given this
    is the paper's Section 3 sky, draw for draw.

    Parameters
    ----------
    region : Grid
        Truth grid; its distance range is where dust and stars are. Ghost cells of ``region`` are ignored.
    n_stars : int
        Stars uniform in l, in b (as in the paper) and in d³.
    structures : {'random', 'realistic', 'gaussian-field'} or tuple of Structure
        ``'random'``: ``n_clumps`` Gaussian clumps drawn at random (the paper). ``'realistic'``: the
        filament, core, near sheet and far clump of :func:`realistic_region`. ``'gaussian-field'``: a draw from the
        model's own prior about the background (:class:`~dustgp.simulate.field.GaussianField`, with
        ``field_length_scale`` and ``field_scale``), the sky on which an exact posterior's bands are calibrated. A
        tuple: those structures.
    structure_size : float
        For ``structures='realistic'``: the structures this many times as wide, their peaks divided by it, so that
        every column is kept (``realistic_region(region, size=...)``). At 2, over the paper's background
        (1.6e-3 mag/pc), the training grid of a 20 × 20 × 35 fit resolves them (docs: Design notes, "Structures
        the grid resolves").
    n_clumps : int
        For ``structures='random'``: Gaussian overdensities, centres uniform in (l, b, d) over the inner 80% of
        each axis of the region. Ignored otherwise.
    background : float, optional
        Density inside the region, mag/pc; default 1.6e-3 (the paper), or :data:`REALISTIC_BACKGROUND`
        (3e-4) for ``structures='realistic'``.
    clump_sigma, clump_peak : tuple of float
        For ``structures='random'``: ranges (uniform) of clump widths, pc, and peak densities above the
        background, mag/pc. Ignored otherwise.
    noise : float
        Fractional extinction noise :math:`f_A` (the paper: 0.1).
    noise_floor : float
        Extinction noise floor :math:`\sigma_\mathrm{floor}`, mag, added in quadrature:
        :math:`\sigma_{A,i} = \sqrt{\sigma_\mathrm{floor}^2 + (f_A A_{\mathrm{true},i})^2}` (the paper: 0), and
        never below :data:`~dustgp.catalog.MIN_EXTINCTION_ERR` (which only a star near ``d_min`` without a
        foreground and without a floor comes near).
    distance_errors : tuple of float, optional
        Range (f_min, f_max) of the stars' fractional 1-sigma distance errors, 0 < f_min <= f_max < 1 (Gaia-like:
        (0.05, 0.20)); the catalogue distances are then scattered (see the notes of :mod:`dustgp.simulate`) and carry
        ``distance_err``. Default: none, distances exact.
    distance_error_model : {'log-uniform', 'distance'}
        How each star's fractional error is drawn: ``'log-uniform'`` in [f_min, f_max] independently of
        distance; ``'distance'`` growing log-linearly with true distance, f_min at ``region.d_min`` to f_max at
        ``region.d_max`` (as parallax errors make it for stars of one brightness).
    outlier_fraction : float
        Share of stars, in [0, 1], given an outlier offset; default 0 (none).
    outlier_amplitude : tuple of float
        Range (lo, hi) of the offsets, mag, drawn uniformly (default 0.3-1.5 mag).
    foreground : bool
        Fill 0 .. d_min with the background density (True) or leave it empty.
    field_length_scale : tuple of float
        For ``structures='gaussian-field'``: the RBF scale lengths in heliocentric x, y, z, pc.
    field_scale : float
        For ``structures='gaussian-field'``: the variance of log10 density about the background, dex².
    seed : int
        Seed of every random draw.

    Returns
    -------
    SimulatedSky

    Raises
    ------
    ValueError
        An option out of range (the message names it and what was expected).
    """
    errors, amplitude = _check_options(
        noise, noise_floor, distance_errors, distance_error_model, outlier_fraction, outlier_amplitude
    )
    rng = np.random.default_rng(seed)
    region = region.with_ghost_cells(0)
    if background is None:
        background = REALISTIC_BACKGROUND if structures == "realistic" else BACKGROUND
    field = {"background": background, "length_scale": field_length_scale, "scale": field_scale, "seed": seed}
    chosen = _choose_structures(
        structures,
        region,
        rng,
        n_clumps=n_clumps,
        clump_sigma=clump_sigma,
        clump_peak=clump_peak,
        size=structure_size,
        field=field,
    )

    l, b, d = _draw_positions(region, rng, n_stars)
    truth = _star_extinction(region, background, chosen, foreground, l, b, d)
    # == noise * truth exactly when noise_floor == 0, but never below what a catalogue takes as plausible: without a
    # foreground and a floor, a star just behind d_min would quote next to nothing
    sigma = np.maximum(np.hypot(noise_floor, noise * truth), MIN_EXTINCTION_ERR)
    observed = truth + sigma * rng.standard_normal(n_stars)

    # Further draws come from their own streams, so that each option leaves the other draws as they were.
    distance_rng, outlier_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    outlier, offset = _draw_outliers(outlier_rng, n_stars, outlier_fraction, amplitude)
    if outlier_fraction > 0:
        observed = observed + offset

    if errors is None:
        catalog = Catalog.from_arrays(l, b, d, observed, sigma)
        return SimulatedSky(
            region, background, chosen, catalog, truth, seed, foreground, d, outlier, offset, None, None
        )
    d_obs, frac = _scatter_distances(distance_rng, d, errors, distance_error_model, (region.d_min, region.d_max))
    catalog = Catalog.from_arrays(l, b, d_obs, observed, sigma, distance_err=frac * d_obs, inflate=False)
    return SimulatedSky(
        region,
        background,
        chosen,
        catalog,
        truth,
        seed,
        foreground,
        d,
        outlier,
        offset,
        d_obs * np.exp(-frac),
        d_obs * np.exp(frac),
    )


def paper_experiment(*, n_stars: int = 120_000, seed: int = 0) -> SimulatedSky:
    """The paper's Section 3 sky: l 50-90°, b -10..10°, d 180-500 pc on a 100 × 100 × 115 truth grid."""
    return simulate(
        Grid(l=(50, 90, 100), b=(-10, 10, 100), d=(180, 500, 115), ghost_cells=0), n_stars=n_stars, seed=seed
    )
