"""Drawing a sky (dustgp.simulate.draw): the paper's sky draw for draw, the choice of structures, option checks,
and the ``dustgp simulate`` command that writes one."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from dustgp.simulate import BACKGROUND, REALISTIC_BACKGROUND, Sheet, paper_experiment, simulate
from simulate_support import PAPER_REGION, REGION

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
        (
            {"structures": "filaments"},
            r"structures: expected 'random', 'realistic', 'gaussian-field' or a tuple of Structure",
        ),
    ],
)
def test_bad_options_are_named(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate(REGION, n_stars=10, **options)


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
        *("--noise", "0.05", "--noise-floor", "0.05", "--structure-size", "2", "--quiet"),
    )
    assert code == 0
    table = Table.read(out)
    sky = simulate(
        PAPER_REGION,
        n_stars=2000,
        structures="realistic",
        structure_size=2.0,
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
def test_cli_bad_options_are_one_line_and_status_2(flags: list[str], message: str, tmp_path: Path, terminal) -> None:
    code, err = terminal("simulate", str(tmp_path / "s.fits"), "--n-stars", "10", *flags, "--quiet")
    assert code == 2
    assert len(err) == 1
    assert re.search(r"^ERROR dustgp: .*" + message, err[0]), err
    assert not (tmp_path / "s.fits").exists()
