"""Hunt & Reffert 2023 open clusters (../shared/data): held-out clusters against the map's posterior predictive.

Slow (~1 min per split on 2 cores); skipped where the shared data folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dustgp.config import load_config
from dustgp.pipeline import run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hunt2023_local.toml"
DATA = ROOT.parent / "shared" / "data" / "hunt2023" / "HUNT2023.csv"


@pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} not present")
@pytest.mark.parametrize("split", [0, 1, 2])
def test_held_out_clusters_are_inside_their_predictive(split: int, tmp_path: Path) -> None:
    config = load_config(EXAMPLE, overrides={"output": {"holdout_seed": split, "formats": ["netcdf"]}})
    report = run(config, out=tmp_path, progress=False, figures=False).report
    held = report["holdout"]
    # the calibration targets: 60-76% inside the 16-84% interval; reduced chi2 <= 1.5 for the clusters the
    # fitted mixture does not flag as outliers, and no more flagged than its outlier fraction allows (binomial,
    # 3 sigma)
    assert 0.60 <= held["inside_16_84"] <= 0.76
    assert held["reduced_chi2_unflagged"] <= 1.5
    fraction, n = report["posterior_predictive"]["outlier_fraction"], held["n_stars"]
    assert held["flagged"] <= fraction * n + 3.0 * (fraction * (1.0 - fraction) * n) ** 0.5
