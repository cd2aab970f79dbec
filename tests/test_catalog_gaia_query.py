"""Tests of dustgp.catalog.gaia_query: the ADQL text of a region and its cuts, regions from grids, and the sky
chunks with their enclosing cones.
"""

from __future__ import annotations

import math

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from dustgp.catalog import GaiaCuts, Region, SkyChunk, adql_query, sky_chunks
from dustgp.grid import Grid

# The query of one 5 x 5 deg chunk in Orion with the default cuts. The cone's numbers are checked geometrically by
# test_enclosing_circle_contains_its_chunk; the rest is the documented selection, written out by hand.
EXPECTED_QUERY = """\
SELECT source_id, l, b, parallax, parallax_error, ruwe, phot_g_mean_mag, distance_gspphot, distance_gspphot_lower, \
distance_gspphot_upper, azero_gspphot, azero_gspphot_lower, azero_gspphot_upper
FROM gaiadr3.gaia_source
WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 68.044207, 14.003416, 3.427254))
  AND l >= 180 AND l < 185
  AND b >= -25 AND b < -20
  AND distance_gspphot >= 250 AND distance_gspphot < 550
  AND distance_gspphot_lower IS NOT NULL AND distance_gspphot_upper IS NOT NULL
  AND azero_gspphot IS NOT NULL AND azero_gspphot_lower IS NOT NULL AND azero_gspphot_upper IS NOT NULL
  AND parallax_over_error >= 5
  AND ruwe < 1.4"""


def test_adql_text_of_one_region() -> None:
    assert adql_query(Region(l=(180, 185), b=(-25, -20), d=(250, 550))) == EXPECTED_QUERY


def test_adql_text_with_changed_cuts_wrap_and_parallax_distances() -> None:
    cuts = GaiaCuts(
        min_parallax_over_error=None,  # off
        max_ruwe=math.inf,  # off, as a run file writes it
        max_g_mag=17,
        libnames=("MARCS", "PHOENIX"),
        where=("phot_bp_mean_mag IS NOT NULL",),
    )
    query = adql_query(Region(l=(350, 10), b=(60, 70), d=(100, 200)), cuts=cuts, distance_from="parallax")
    lines = query.splitlines()[3:]
    assert lines == [
        "  AND (l >= 350 OR l < 10)",
        "  AND b >= 60 AND b < 70",
        "  AND parallax > 5 AND parallax <= 10",  # 1000 / 200 pc and 1000 / 100 pc, mas
        "  AND distance_gspphot_lower IS NOT NULL AND distance_gspphot_upper IS NOT NULL",
        "  AND azero_gspphot IS NOT NULL AND azero_gspphot_lower IS NOT NULL AND azero_gspphot_upper IS NOT NULL",
        "  AND phot_g_mean_mag < 17",
        "  AND libname_gspphot IN ('MARCS', 'PHOENIX')",
        "  AND (phot_bp_mean_mag IS NOT NULL)",
    ]
    assert "parallax_over_error" not in query
    assert "ruwe <" not in query


@pytest.mark.parametrize(
    ("field", "value"),
    [("libnames", ("MARCS'); DROP",)), ("max_ruwe", "1.4"), ("max_ruwe", math.nan), ("where", "ruwe < 2")],
)
def test_cuts_refuse_what_would_break_the_query(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        GaiaCuts(**{field: value})


def test_cuts_from_a_run_file_table_name_unknown_keys() -> None:
    assert GaiaCuts.from_dict({"max_ruwe": 1.2, "libnames": ["MARCS"]}) == GaiaCuts(max_ruwe=1.2, libnames=("MARCS",))
    with pytest.raises(ValueError, match="unknown 'max_rwue'"):
        GaiaCuts.from_dict({"max_rwue": 1.2})


def test_region_from_a_grid_is_padded_and_skips_the_ghost_cells() -> None:
    grid = Grid(l=(180, 225, 45), b=(-35, 0, 35), d=(300, 550, 25), ghost_cells=3)
    region = Region.from_grid(grid, padding_deg=0.5, padding_fraction=0.05)
    assert region.l == pytest.approx((179.5, 225.5))
    assert region.b == pytest.approx((-35.5, 0.5))
    assert region.d == pytest.approx((285.0, 577.5))  # from d_min = 300 pc, not from the ghost cells' 0 pc
    assert Region(l=(0, 10), b=(80, 89.8), d=(10, 20)).padded(0.5).b == (79.5, 90.0)  # clipped at the pole


@pytest.mark.parametrize(
    ("l", "b", "chunk_deg", "n_chunks"),
    [((180, 217), (-25.5, -3.8), 5.0, 8 * 5), ((72, 86), (-5, 5), 5.0, 3 * 2), ((350, 10), (60, 70), 8.0, 4 * 2)],
)
def test_chunks_tile_the_box_once(l: tuple, b: tuple, chunk_deg: float, n_chunks: int) -> None:
    region = Region(l=l, b=b, d=(100, 200))
    chunks = sky_chunks(region, chunk_deg=chunk_deg)
    assert len(chunks) == n_chunks
    for c in chunks:
        assert c.l[1] - c.l[0] <= chunk_deg + 1e-9
        assert c.b[1] - c.b[0] <= chunk_deg + 1e-9
        assert not (c.l[0] < 360.0 < c.l[1])  # no chunk straddles l = 360
    # every point of the box lies in exactly one chunk (half-open chunks: shared edges count once)
    rng = np.random.default_rng(3)
    width = region.l[1] - region.l[0]
    ls = np.concatenate([region.l[0] + width * rng.random(2000), [c.l[0] for c in chunks]])
    bs = np.concatenate([rng.uniform(*region.b, 2000), [c.b[0] for c in chunks]])
    inside = np.array(
        [[(c.l[0] <= x < c.l[1]) and (c.b[0] <= y < c.b[1]) for c in chunks] for x, y in zip(ls, bs, strict=True)]
    )
    assert np.all(inside.sum(axis=1) == 1)


@pytest.mark.parametrize(
    "chunk",
    [
        SkyChunk(l=(180, 185), b=(-25, -20)),
        SkyChunk(l=(72, 86), b=(-5, 5)),
        SkyChunk(l=(356.5, 363.5), b=(80, 90)),  # at the pole, across l = 0
        SkyChunk(l=(10, 40), b=(-60, -30)),
    ],
)
def test_enclosing_circle_contains_its_chunk(chunk: SkyChunk) -> None:
    ra, dec, radius = chunk.enclosing_circle()
    grid_l, grid_b = np.meshgrid(np.linspace(*chunk.l, 301), np.linspace(*chunk.b, 301))
    points = SkyCoord(l=grid_l.ravel() * u.deg, b=grid_b.ravel() * u.deg, frame="galactic")
    separation = points.separation(SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs")).deg
    assert separation.max() <= radius  # every star of the chunk is inside the cone the archive searches
    assert radius - separation.max() < 0.02  # and the cone is no wider than the documented 0.01 deg margin needs


def test_invalid_regions_and_chunk_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="b: expected"):
        Region(l=(0, 10), b=(10, -10), d=(1, 2))
    with pytest.raises(ValueError, match="d: expected"):
        Region(l=(0, 10), b=(-10, 10), d=(500, 100))
    with pytest.raises(ValueError, match="chunk_deg"):
        sky_chunks(Region(l=(0, 10), b=(-10, 10), d=(1, 2)), chunk_deg=0)
