"""Simulated skies: the paper's sky draw for draw, the realistic structures, and the observation model's options."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from scipy import stats

from dustgp.grid import Grid, lbd_to_xyz
from dustgp.simulate import (
    BACKGROUND,
    REALISTIC_BACKGROUND,
    Clump,
    Filament,
    Sheet,
    paper_experiment,
    realistic_region,
    simulate,
)

# A small truth grid, so that a sky of 20,000 stars is drawn in well under a second.
REGION = Grid(l=(60, 70, 20), b=(-4, 4, 10), d=(150, 300, 30), ghost_cells=0)
PAPER_REGION = Grid(l=(50, 90, 100), b=(-10, 10, 100), d=(180, 500, 115), ghost_cells=0)
N = 20_000
#: Bounds on sample statistics: a deviation of more than 5 standard errors fails (one chance in ~3.5 million for a
#: Gaussian statistic; the draws are seeded, so a pass is reproducible).
Z = 5.0


def _sky(**options):
    return simulate(REGION, n_stars=N, n_clumps=2, seed=7, **options)


# ---- the paper's sky is unchanged ------------------------------------------------------------------------------

# simulate(REGION, n_stars=5, n_clumps=2, seed=3) as drawn by the code before the realistic options existed
# (git commit 18ad3ef, src/dustgp/simulate.py), printed with 17 significant digits.
HEAD_L = [63.91228190495662, 65.16740182621363, 64.30628020414179, 65.8679857143814, 67.3783778729216]
HEAD_B = [3.6501380386887883, -1.7263906900096684, 1.1883776566386004, 1.5697279733612435, -1.658234007900103]
HEAD_D = [150.5197263782428, 297.65956270137536, 218.45144568687712, 220.99357282251842, 290.20862530264293]
HEAD_A = [0.2598538037856755, 1.9798621352045123, 1.2262264713030817, 1.2146925015976797, 1.6748158621221436]
HEAD_TRUE = [0.24652832808379696, 1.6588584261364434, 1.2602041364826915, 1.2450159455097576, 1.5222397059541666]
HEAD_CLUMPS = [
    ((83.57235372466526, 155.1146602577284, 5.931694306437907), 27.18576947211251, 0.010555822634193256),
    ((98.85639368925281, 193.13647994806612, 1.9912812342945985), 31.018657271138217, 0.009818752318742454),
]


def test_the_paper_sky_is_drawn_as_before() -> None:
    sky = simulate(REGION, n_stars=5, n_clumps=2, seed=3)
    cat = sky.catalog
    # rtol 1e-12: the same draws and formulas; only the last bits of exp/cbrt may differ between math libraries
    for got, want in [
        (cat.l, HEAD_L),
        (cat.b, HEAD_B),
        (cat.distance, HEAD_D),
        (cat.extinction, HEAD_A),
        (sky.true_extinction, HEAD_TRUE),
        (cat.extinction_err, 0.1 * np.array(HEAD_TRUE)),
    ]:
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert len(sky.structures) == len(sky.clumps) == 2
    for clump, (center, sigma, peak) in zip(sky.clumps, HEAD_CLUMPS, strict=True):
        np.testing.assert_allclose(clump.center, center, rtol=1e-12)
        assert clump.sigma == pytest.approx(sigma, rel=1e-12)
        assert clump.peak == pytest.approx(peak, rel=1e-12)
    assert sky.background == BACKGROUND
    assert cat.distance_err is None
    assert not sky.outlier.any()
    np.testing.assert_array_equal(sky.true_distance, cat.distance)


def test_paper_experiment_is_the_section_3_region() -> None:
    sky = paper_experiment(n_stars=10, seed=0)
    assert sky.region == PAPER_REGION
    assert len(sky.catalog) == 10
    assert len(sky.clumps) == 3


def test_the_options_leave_the_clean_twin_as_it_was() -> None:
    """Distance errors and outliers come from their own streams: same stars, truth and noise as without them."""
    twin = _sky()
    real = _sky(distance_errors=(0.05, 0.2), outlier_fraction=0.03)
    only_outliers = _sky(outlier_fraction=0.03)
    np.testing.assert_array_equal(real.catalog.l, twin.catalog.l)
    np.testing.assert_array_equal(real.catalog.b, twin.catalog.b)
    np.testing.assert_array_equal(real.true_distance, twin.catalog.distance)
    np.testing.assert_array_equal(real.true_extinction, twin.true_extinction)
    np.testing.assert_array_equal(real.catalog.extinction_err, twin.catalog.extinction_err)
    np.testing.assert_array_equal(real.catalog.extinction[~real.outlier], twin.catalog.extinction[~real.outlier])
    # (a + x) - x may differ from a in the last bit
    np.testing.assert_allclose(real.catalog.extinction - real.outlier_offset, twin.catalog.extinction, rtol=1e-14)
    # switching distance errors on does not move the outliers
    np.testing.assert_array_equal(real.outlier, only_outliers.outlier)
    np.testing.assert_array_equal(real.outlier_offset, only_outliers.outlier_offset)


# ---- distance errors ------------------------------------------------------------------------------------------


def test_distance_errors_are_log_normal_with_the_reported_width() -> None:
    f_lo, f_hi = 0.05, 0.2
    sky = _sky(distance_errors=(f_lo, f_hi))
    cat = sky.catalog
    frac = cat.distance_err / cat.distance  # reported: distance_err = f d_obs
    assert frac.min() >= f_lo
    assert frac.max() <= f_hi * (1 + 1e-12)
    # log-uniform: ln f uniform on [ln f_lo, ln f_hi]
    u = (np.log(frac) - np.log(f_lo)) / np.log(f_hi / f_lo)
    assert stats.kstest(u, "uniform").statistic < Z / np.sqrt(N) / 2  # Kolmogorov: sqrt(N) D ~ O(1)
    # ln(d_obs / d_true) / f ~ N(0, 1)
    z = np.log(cat.distance / sky.true_distance) / frac
    assert abs(z.mean()) < Z / np.sqrt(N)
    assert abs(z.std() - 1.0) < Z / np.sqrt(2 * N)
    assert stats.kstest(z, "norm").statistic < Z / np.sqrt(N) / 2
    # the reported 16/84 percentiles hold the true distance 68.27% of the time, and are d_obs exp(-+f)
    np.testing.assert_allclose(sky.distance_lower, cat.distance * np.exp(-frac), rtol=1e-12)
    np.testing.assert_allclose(sky.distance_upper, cat.distance * np.exp(frac), rtol=1e-12)
    inside = np.mean((sky.true_distance >= sky.distance_lower) & (sky.true_distance <= sky.distance_upper))
    p = stats.norm.cdf(1) - stats.norm.cdf(-1)
    assert abs(inside - p) < Z * np.sqrt(p * (1 - p) / N)
    # stars scattered off the region stay in the catalogue
    assert len(cat) == N
    assert (cat.distance > REGION.d_max).any()
    assert (cat.distance < REGION.d_min).any()
    # not inflated: that is the fit's choice
    assert not cat.inflation.any()


def test_distance_errors_can_grow_with_distance() -> None:
    f_lo, f_hi = 0.05, 0.2
    sky = _sky(distance_errors=(f_lo, f_hi), distance_error_model="distance")
    frac = sky.catalog.distance_err / sky.catalog.distance
    t = (sky.true_distance - REGION.d_min) / (REGION.d_max - REGION.d_min)
    np.testing.assert_allclose(frac, f_lo * (f_hi / f_lo) ** t, rtol=1e-12)
    z = np.log(sky.catalog.distance / sky.true_distance) / frac
    assert abs(z.std() - 1.0) < Z / np.sqrt(2 * N)


# ---- outliers and the error model -----------------------------------------------------------------------------


def test_outliers_have_the_asked_fraction_and_amplitudes() -> None:
    lo, hi = 0.3, 1.5
    sky = _sky(outlier_fraction=0.03, outlier_amplitude=(lo, hi))
    assert sky.outlier.sum() == round(0.03 * N)
    shift = sky.outlier_offset[sky.outlier]
    assert shift.min() >= lo
    assert shift.max() <= hi
    assert not sky.outlier_offset[~sky.outlier].any()
    # uniform on [lo, hi]: mean (lo + hi) / 2, standard error (hi - lo) / sqrt(12 n)
    assert abs(shift.mean() - 0.5 * (lo + hi)) < Z * (hi - lo) / np.sqrt(12 * shift.size)
    # their quoted sigma is unchanged and their normalised residuals sit far out
    np.testing.assert_allclose(sky.catalog.extinction_err, 0.1 * sky.true_extinction, rtol=1e-12)
    residual = (sky.catalog.extinction - sky.true_extinction) / sky.catalog.extinction_err
    assert np.median(residual[sky.outlier]) > 3.0
    assert abs(np.median(residual[~sky.outlier])) < Z * 1.2533 / np.sqrt(N)  # sd of a median: sqrt(pi/2)/sqrt(n)


def test_the_error_floor_adds_in_quadrature() -> None:
    floor, fraction = 0.05, 0.05
    sky = _sky(noise=fraction, noise_floor=floor)
    sigma = sky.catalog.extinction_err
    np.testing.assert_allclose(sigma, np.sqrt(floor**2 + (fraction * sky.true_extinction) ** 2), rtol=1e-12)
    assert sigma.min() >= floor
    z = (sky.catalog.extinction - sky.true_extinction) / sigma
    assert abs(z.mean()) < Z / np.sqrt(N)
    assert abs(z.std() - 1.0) < Z / np.sqrt(2 * N)
    floor_only = _sky(noise=0.0, noise_floor=floor)
    np.testing.assert_array_equal(floor_only.catalog.extinction_err, floor)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"noise": -0.1}, r"noise: expected a fraction >= 0, got -0.1"),
        ({"noise": 0.0}, r"noise and noise_floor are both 0"),
        ({"noise_floor": -1.0}, r"noise_floor: expected an uncertainty >= 0 mag, got -1.0"),
        ({"distance_errors": (0.2, 0.05)}, r"distance_errors: expected \(lo, hi\) with lo <= hi"),
        ({"distance_errors": (0.0, 0.1)}, r"distance_errors: expected fractions with 0 < lo <= hi < 1"),
        ({"distance_errors": (0.1, 1.5)}, r"distance_errors: expected fractions with 0 < lo <= hi < 1"),
        ({"distance_errors": (0.1,)}, r"distance_errors: expected \(lo, hi\)"),
        ({"distance_error_model": "gaia"}, r"distance_error_model: expected 'log-uniform' or 'distance', got 'gaia'"),
        ({"outlier_fraction": 1.5}, r"outlier_fraction: expected a fraction in \[0, 1\], got 1.5"),
        ({"outlier_amplitude": (1.5, 0.3)}, r"outlier_amplitude: expected \(lo, hi\) with lo <= hi"),
        ({"structures": "filaments"}, r"structures: expected 'random', 'realistic' or a tuple of Structure"),
    ],
)
def test_bad_options_are_named(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate(REGION, n_stars=10, **options)


# ---- structures -----------------------------------------------------------------------------------------------


def _xyz_to_lbd(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.linalg.norm(xyz, axis=-1)
    return np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])) % 360, np.degrees(np.arcsin(xyz[:, 2] / d)), d


def test_structures_have_their_closed_forms() -> None:
    center = tuple(float(v) for v in lbd_to_xyz(65.0, 0.0, 200.0))
    clump = Clump(center, 10.0, 0.02)
    assert clump.density_at(65.0, 0.0, 200.0) == pytest.approx(0.02, rel=1e-12)
    assert clump.density_at(65.0, 0.0, 210.0) == pytest.approx(0.02 * np.exp(-0.5), rel=1e-12)
    assert clump.peak_distance() == pytest.approx(200.0, abs=0.025)
    # the column through a Gaussian's centre is peak sigma sqrt(2 pi)
    d = np.linspace(0, 400, 40001)
    column = np.trapezoid(clump.density_at(65.0, 0.0, d), d)
    assert column == pytest.approx(0.02 * 10.0 * np.sqrt(2 * np.pi), rel=1e-9)

    start, end = (100.0, 0.0, 0.0), (100.0, 100.0, 0.0)
    filament = Filament(start, end, 5.0, 0.01)
    xyz = np.array([start, end, (100.0, 50.0, 0.0), (105.0, 50.0, 0.0), (100.0, 50.0, 10.0), (100.0, 110.0, 0.0)])
    lbd = _xyz_to_lbd(xyz)
    want = 0.01 * np.exp(-0.5 * np.array([0, 0, 0, 1, 4, 4]))  # on the axis, 1 and 2 sigma across, 2 sigma beyond
    np.testing.assert_allclose(filament.density_at(*lbd), want, rtol=1e-9)
    assert filament.sightline() == pytest.approx((26.565051177, 0.0))  # atan(50 / 100)
    assert filament.peak_distance() == pytest.approx(np.hypot(100, 50), abs=0.025)

    sheet = Sheet(150.0, 4.0, 0.03, (-10.0, 10.0), (-5.0, 5.0), edge=0.5)
    assert sheet.density_at(0.0, 0.0, 150.0) == pytest.approx(0.03, rel=1e-12)
    assert sheet.density_at(355.0, 2.0, 154.0) == pytest.approx(0.03 * np.exp(-0.5), rel=1e-9)  # across l = 0
    assert sheet.density_at(5.0, 2.0, 154.0) == pytest.approx(sheet.density_at(355.0, 2.0, 154.0), rel=1e-12)
    assert sheet.density_at(10.0, 0.0, 150.0) == pytest.approx(0.015, rel=1e-9)  # the middle of an edge
    assert sheet.density_at(30.0, 0.0, 150.0) < 1e-12
    assert sheet.sightline() == (0.0, 0.0)
    assert sheet.peak_distance() == pytest.approx(150.0, abs=0.025)


# (l, b, d) of each realistic structure's densest point in the paper's region: the fractions of the axes given in
# realistic_region's docstring applied to l 50-90 deg, b -10..10 deg, d 180-500 pc.
def _at(fl: float, fb: float, fd: float) -> np.ndarray:
    return lbd_to_xyz(50 + fl * 40, -10 + fb * 20, 180 + fd * 320)


_FILAMENT_MIDPOINT = _xyz_to_lbd(0.5 * (_at(0.10, 0.15, 0.45) + _at(0.75, 0.40, 0.55))[None])
REALISTIC_PEAKS = {
    "near sheet": (50 + 0.25 * 40, -10 + 0.70 * 20, 180 + 0.12 * 320),  # the centre of its box
    "filament": tuple(float(v[0]) for v in _FILAMENT_MIDPOINT),  # the midpoint of its axis
    "core": (50 + 0.70 * 40, -10 + 0.72 * 20, 180 + 0.30 * 320),
    "far clump": (50 + 0.88 * 40, -10 + 0.25 * 20, 180 + 0.82 * 320),
}


def test_realistic_structures_are_where_stated() -> None:
    structures = realistic_region(PAPER_REGION)
    assert [s.name for s in structures] == list(REALISTIC_PEAKS)
    assert isinstance(structures[1], Filament)
    for s in structures:
        l, b, d = REALISTIC_PEAKS[s.name]
        assert s.sightline() == pytest.approx((l, b), abs=1e-9)
        assert s.peak_distance(d_range=(0.0, PAPER_REGION.d_max)) == pytest.approx(d, abs=0.025)
    filament = structures[1]
    length = np.linalg.norm(np.subtract(filament.end, filament.start))
    assert length > 10 * filament.sigma  # elongated
    core = structures[2]
    assert core.peak * core.sigma * np.sqrt(2 * np.pi) > 1.0  # a dense core: > 1 mag through it


def test_each_realistic_sightline_peaks_at_its_own_structure() -> None:
    """Along each structure's sightline the densest point of the whole truth is that structure's."""
    sky = simulate(PAPER_REGION, n_stars=100, structures="realistic", seed=1)
    assert sky.background == REALISTIC_BACKGROUND
    d = np.arange(0.0, PAPER_REGION.d_max, 0.05)
    for s in sky.structures:
        l, b = s.sightline()
        total = sky.density_at(np.full_like(d, l), np.full_like(d, b), d)
        assert d[np.argmax(total)] == pytest.approx(sky.peak_distance(s.name), abs=0.05)
        # the others add < 1e-3 of its peak anywhere on it
        own = s.density_at(np.full_like(d, l), np.full_like(d, b), d)
        assert np.max(total - own - sky.background) < 1e-3 * s.peak
    with pytest.raises(KeyError, match="no structure named 'cloud'; known: near sheet, filament, core, far clump"):
        sky.structure("cloud")


def test_realistic_truth_on_a_grid_and_an_empty_foreground() -> None:
    sky = simulate(PAPER_REGION, n_stars=100, structures="realistic", foreground=False, seed=1)
    core = sky.structure("core")
    l, b = core.sightline()
    assert sky.density_at(l, b, sky.peak_distance("core")) == pytest.approx(REALISTIC_BACKGROUND + core.peak, 1e-3)
    assert sky.density_at(l, b, 100.0) == 0.0  # in front of the region
    grid = Grid(l=(50, 90, 8), b=(-10, 10, 4), d=(180, 500, 16), ghost_cells=1)
    rho = sky.density_on(grid)
    assert rho.shape == grid.shape
    assert np.all(rho[0] == 0.0)  # the ghost cell in front is empty
    assert np.all(rho[1:] >= REALISTIC_BACKGROUND)


def test_custom_structures() -> None:
    sheet = Sheet(200.0, 5.0, 0.01, (60.0, 70.0), (-4.0, 4.0), name="wall")
    sky = simulate(REGION, n_stars=2000, structures=(sheet,), background=1e-4, seed=2)
    assert sky.structures == (sheet,)
    assert sky.clumps == ()
    # every star behind the wall has its column (0.01 x 5 x sqrt(2 pi) = 0.125 mag, less near the edges)
    behind = sky.true_distance > 230
    assert np.median(sky.true_extinction[behind]) > 0.1


# ---- the command line -----------------------------------------------------------------------------------------


def test_cli_writes_a_realistic_catalogue(tmp_path: Path, terminal) -> None:
    out = tmp_path / "stars.fits"
    code, _ = terminal(
        *("simulate", str(out), "--n-stars", "2000", "--structures", "realistic", "--seed", "3"),
        *("--distance-errors", "0.05,0.2", "--outlier-fraction", "0.03", "--outlier-amplitude", "0.3,1.5"),
        *("--noise", "0.05", "--noise-floor", "0.05", "--quiet"),
    )
    assert code == 0
    table = Table.read(out)
    sky = simulate(
        PAPER_REGION,
        n_stars=2000,
        structures="realistic",
        distance_errors=(0.05, 0.2),
        outlier_fraction=0.03,
        noise=0.05,
        noise_floor=0.05,
        seed=3,
    )
    for column, want in [
        ("distance", sky.catalog.distance),
        ("distance_err", sky.catalog.distance_err),
        ("distance_lower", sky.distance_lower),
        ("distance_upper", sky.distance_upper),
        ("distance_true", sky.true_distance),
        ("A0", sky.catalog.extinction),
        ("A0_err", sky.catalog.extinction_err),
        ("A0_true", sky.true_extinction),
        ("outlier", sky.outlier),
        ("A0_outlier_offset", sky.outlier_offset),
    ]:
        np.testing.assert_array_equal(np.asarray(table[column]), want, err_msg=column)
    assert str(table["distance_lower"].unit) == "pc"
    assert [s["name"] for s in json.loads(table.meta["structures"])] == [s.name for s in sky.structures]
    assert json.loads(table.meta["dustgp_simulate"])["background"] == REALISTIC_BACKGROUND


def test_cli_default_table_has_no_new_columns(tmp_path: Path, terminal) -> None:
    out = tmp_path / "stars.ecsv"
    assert terminal("simulate", str(out), "--n-stars", "50", "--quiet")[0] == 0
    table = Table.read(out)
    assert not {"distance_err", "distance_lower", "outlier"} & set(table.colnames)
    np.testing.assert_array_equal(table["A0"], paper_experiment(n_stars=50, seed=0).catalog.extinction)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--distance-errors", "0.05"],
            r"--distance-errors: expected LO,HI \(two numbers, e.g. 0.05,0.2\), got '0.05'",
        ),
        (["--distance-errors", "0.2,0.05"], r"distance_errors: expected \(lo, hi\) with lo <= hi"),
        (["--outlier-amplitude", "a,b"], r"--outlier-amplitude: expected LO,HI"),
        (["--outlier-fraction", "2"], r"outlier_fraction: expected a fraction in \[0, 1\], got 2.0"),
        (["--noise-floor", "-0.05"], r"noise_floor: expected an uncertainty >= 0 mag"),
    ],
)
def test_cli_bad_options_are_one_line_and_status_2(
    flags: list[str], message: str, tmp_path: Path, terminal
) -> None:
    code, err = terminal("simulate", str(tmp_path / "s.fits"), "--n-stars", "10", *flags, "--quiet")
    assert code == 2
    assert len(err) == 1
    assert re.search(r"^ERROR dustgp: .*" + message, err[0]), err
    assert not (tmp_path / "s.fits").exists()
