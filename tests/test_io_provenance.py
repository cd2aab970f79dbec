"""Provenance: the record every map file carries (version, reference, config, seed, meta) round-trips."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from dustgp._version import __version__
from dustgp.io.formats import read_map, write_map
from dustgp.io.provenance import REFERENCE, _provenance
from random_maps import GRIDS, META, make_map


@pytest.mark.parametrize("writer", ["netcdf", "fits"])
def test_empty_meta_round_trips(writer: str, tmp_path: Path) -> None:
    dmap = make_map(GRIDS["plain"])
    dmap.meta = {}
    path = tmp_path / ("m.nc" if writer == "netcdf" else "m.fits")
    write_map(dmap, path)
    assert read_map(path).meta == {}


def test_the_record_holds_version_reference_and_json_documents() -> None:
    dmap = make_map(GRIDS["plain"])
    dmap.meta = {**META, "seed": np.int64(7), "scale": np.float32(0.5), "path": Path("a/b"), "nodes": np.arange(3)}
    prov = _provenance(dmap)
    assert prov["dustgp_version"] == __version__
    assert prov["reference"] == REFERENCE
    assert prov["seed"] == 7
    assert type(prov["seed"]) is int  # a header card, not a numpy scalar
    assert dt.datetime.fromisoformat(prov["created"]).tzinfo is not None
    assert json.loads(prov["config"]) == META["config"]
    assert json.loads(prov["hyperparameters"]) == META["hyperparameters"]
    meta = json.loads(prov["meta"])
    assert (meta["seed"], meta["scale"], meta["path"], meta["nodes"]) == (7, 0.5, "a/b", [0, 1, 2])
    np.testing.assert_array_equal(json.loads(prov["grid"])["l_edges"], dmap.grid.l_edges)


@pytest.mark.parametrize("seed", [True, "seven", 7.0, None])
def test_only_integer_seeds_get_a_seed_card(seed: object, tmp_path: Path) -> None:
    dmap = make_map(GRIDS["plain"])
    dmap.meta = {"seed": seed}
    assert _provenance(dmap)["seed"] is None
    write_map(dmap, tmp_path / "m.fits")
    with fits.open(tmp_path / "m.fits") as hdul:
        assert "SEED" not in hdul[0].header
    assert read_map(tmp_path / "m.fits").meta == {"seed": seed}  # the meta JSON keeps it as it was


def test_meta_that_is_not_json_is_refused() -> None:
    dmap = make_map(GRIDS["plain"])
    dmap.meta = {"model": object()}
    with pytest.raises(TypeError, match="meta: object is not JSON-serialisable"):
        _provenance(dmap)
