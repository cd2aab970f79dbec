"""The built-in truths (dustgp.simulate.truths): the paper's random clumps, and the realistic region's filament,
core, near sheet and far clump where its docstring says they are."""

import numpy as np
import pytest

from dustgp.grid import lbd_to_xyz
from dustgp.simulate import REALISTIC_BACKGROUND, Filament, realistic_region, simulate
from simulate_support import PAPER_REGION, REGION, xyz_to_lbd


# (l, b, d) of each realistic structure's densest point in the paper's region: the fractions of the axes given in
# realistic_region's docstring applied to l 50-90 deg, b -10..10 deg, d 180-500 pc.
def _at(fl: float, fb: float, fd: float) -> np.ndarray:
    return lbd_to_xyz(50 + fl * 40, -10 + fb * 20, 180 + fd * 320)


_FILAMENT_MIDPOINT = xyz_to_lbd(0.5 * (_at(0.10, 0.15, 0.45) + _at(0.75, 0.40, 0.55))[None])
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


def test_larger_realistic_structures_keep_their_place_and_their_column() -> None:
    """``size`` widens every structure and lowers its peak: same sightline, same peak, same column through it."""
    d = np.arange(0.0, 800.0, 0.05)
    for small, large in zip(realistic_region(PAPER_REGION), realistic_region(PAPER_REGION, size=2.0), strict=True):
        assert large.name == small.name
        assert large.sightline() == small.sightline()
        assert large.peak == pytest.approx(small.peak / 2.0, rel=1e-12)
        l, b = small.sightline()
        columns = [
            np.sum(s.density_at(np.full_like(d, l), np.full_like(d, b), d)) * 0.05 for s in (small, large)
        ]  # mag; the profiles are Gaussian in distance, tens of 0.05 pc steps wide
        # the sheet's sky edges, blurred twice as wide, take 0.2% off the middle of its box
        assert columns[1] == pytest.approx(columns[0], rel=1e-3 if large.name != "near sheet" else 3e-3)
        assert large.peak_distance(d_range=(0.0, PAPER_REGION.d_max)) == pytest.approx(
            small.peak_distance(d_range=(0.0, PAPER_REGION.d_max)), abs=0.05
        )
    sheet, large_sheet = realistic_region(PAPER_REGION)[0], realistic_region(PAPER_REGION, size=2.0)[0]
    assert large_sheet.edge == pytest.approx(2.0 * sheet.edge, rel=1e-12)  # its sky edges widen too
    assert large_sheet.thickness == pytest.approx(2.0 * sheet.thickness, rel=1e-12)
    with pytest.raises(ValueError, match="size: expected a factor > 0, got 0"):
        realistic_region(PAPER_REGION, size=0)


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


def test_random_clumps_lie_in_the_inner_part_of_the_region() -> None:
    # centres uniform over the inner 80% of each axis, widths and peaks in the asked ranges
    sky = simulate(REGION, n_stars=10, n_clumps=200, clump_sigma=(5.0, 6.0), clump_peak=(1e-3, 2e-3), seed=4)
    centres = np.array([c.center for c in sky.clumps])
    l, b, d = xyz_to_lbd(centres)
    assert np.all((l >= 61.0) & (l <= 69.0))
    assert np.all((b >= -3.2 - 1e-9) & (b <= 3.2 + 1e-9))
    assert np.all((d >= 165.0 - 1e-9) & (d <= 285.0 + 1e-9))
    assert all(5.0 <= c.sigma <= 6.0 and 1e-3 <= c.peak <= 2e-3 for c in sky.clumps)
    assert {c.name for c in sky.clumps} == {"clump"}


def test_simulate_takes_the_realistic_structures_at_a_size() -> None:
    sky = simulate(REGION, n_stars=500, structures="realistic", structure_size=2.0, seed=3)
    assert sky.structures == realistic_region(REGION, size=2.0)
    assert sky.structures != realistic_region(REGION)
    with pytest.raises(ValueError, match=r"structure_size: only for structures='realistic', got structures='random'"):
        simulate(REGION, n_stars=500, structure_size=2.0)
    with pytest.raises(ValueError, match="size"):
        simulate(REGION, n_stars=500, structures="realistic", structure_size=0.0)
