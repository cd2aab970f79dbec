"""The shapes of a truth (dustgp.simulate.structures): each structure's closed form, and the total density."""

import numpy as np
import pytest

from dustgp.grid import lbd_to_xyz
from dustgp.simulate import Clump, Filament, Sheet, true_density
from simulate_support import REGION, xyz_to_lbd


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
    lbd = xyz_to_lbd(xyz)
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


def test_true_density_adds_structures_to_the_background_inside_the_region() -> None:
    clump = Clump(tuple(float(v) for v in lbd_to_xyz(65.0, 0.0, 200.0)), 10.0, 0.02)
    d = np.array([0.0, 100.0, 149.9, 200.0, 300.0, 300.1])
    l, b = np.full_like(d, 65.0), np.zeros_like(d)
    with_fg = true_density(l, b, d, region=REGION, background=1e-3, structures=(clump,))
    np.testing.assert_allclose(with_fg[:5], 1e-3 + clump.density_at(l, b, d)[:5], rtol=1e-12)
    assert with_fg[5] == 0.0  # beyond d_max
    without_fg = true_density(l, b, d, region=REGION, background=1e-3, structures=(clump,), foreground=False)
    np.testing.assert_array_equal(without_fg[:3], 0.0)  # in front of d_min
    np.testing.assert_array_equal(without_fg[3:], with_fg[3:])
    assert true_density(65.0, 0.0, 200.0, region=REGION, background=1e-3, structures=()) == 1e-3
