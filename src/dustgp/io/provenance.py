"""Provenance: the record every dustgp map file carries about where it came from.

Every product records the dustgp version that wrote it, a UTC timestamp, the paper that defines the method
(Dharmawardena et al. 2022, A&A 658, A166), the run configuration, the seed, the hyperparameters, the map's whole
``meta`` dict and its exact grid edges (JSON documents). This module builds that record and writes and reads it in
the two containers: NetCDF global attributes and FITS header cards plus a ``PROVENANCE`` table.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from .._version import __version__
from ..posterior_map import PosteriorMap

__all__ = ["REFERENCE"]

#: The paper that defines the method, written into every product.
REFERENCE = (
    "Dharmawardena, Bailer-Jones, Fouesneau & Foreman-Mackey 2022, A&A 658, A166 (doi:10.1051/0004-6361/202141298)"
)


def _json_default(obj: Any) -> Any:
    """JSON for the numpy scalars and arrays that creep into configs and hyperparameters."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"meta: {type(obj).__name__} is not JSON-serialisable")


def _dumps(obj: Any) -> str:
    """``obj`` as a JSON document (numpy scalars and arrays, paths as their plain values)."""
    return json.dumps(obj, default=_json_default)


def _provenance(dmap: PosteriorMap) -> dict[str, Any]:
    """What every product records about where it came from."""
    meta = dmap.meta or {}
    seed = meta.get("seed")
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        seed = None  # only integer seeds get a header card; anything else stays in the meta JSON
    return {
        "dustgp_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "reference": REFERENCE,
        "config": _dumps(meta.get("config", {})),
        "hyperparameters": _dumps(meta.get("hyperparameters", {})),
        "seed": None if seed is None else int(seed),
        "meta": _dumps(meta),
        "grid": _dumps(dmap.grid.to_dict()),
    }


def _meta_from_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """The map's ``meta`` from NetCDF global attributes: the whole dict, or what a file without it records."""
    if "dustgp_meta" in attrs:
        return json.loads(attrs["dustgp_meta"])
    meta: dict[str, Any] = {}
    for key in ("config", "hyperparameters"):
        if key in attrs:
            meta[key] = json.loads(attrs[key])
    if "seed" in attrs:
        meta["seed"] = int(attrs["seed"])
    return meta


def _provenance_hdu(prov: dict[str, Any]) -> fits.BinTableHDU:
    """The FITS ``PROVENANCE`` table: one JSON document per row (``NAME``, ``JSON``)."""
    names = ["meta", "config", "hyperparameters", "grid"]
    values = [prov[n] for n in names]
    width = max(1, *(len(v) for v in values))
    hdu = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="NAME", format="16A", array=np.array(names)),
            fits.Column(name="JSON", format=f"{width}A", array=np.array(values)),
        ],
        name="PROVENANCE",
    )
    hdu.header["COMMENT"] = "JSON documents: the PosteriorMap meta dict, run config, hyperparameters, grid edges"
    return hdu


def _read_provenance(hdul: fits.HDUList) -> dict[str, Any]:
    """The decoded JSON documents of a FITS file's ``PROVENANCE`` table; empty when it has none."""
    if "PROVENANCE" not in hdul:
        return {}
    table = hdul["PROVENANCE"].data
    return {str(n).strip(): json.loads(str(v)) for n, v in zip(table["NAME"], table["JSON"], strict=True)}


def _primary_cards(header: fits.Header, prov: dict[str, Any]) -> None:
    """Write the provenance cards ``DUSTGPV``, ``SEED``, ``DATE``, ``ORIGIN`` and ``REFERENC`` into ``header``."""
    header["DUSTGPV"] = (prov["dustgp_version"], "dustgp version that wrote this file")
    if prov["seed"] is not None:
        header["SEED"] = (prov["seed"], "random seed of the prediction")
    header["DATE"] = (prov["created"], "UTC time of writing")
    header["ORIGIN"] = "dustgp"
    header["REFERENC"] = REFERENCE


def _meta_from_header(header: fits.Header, prov: dict[str, Any]) -> dict[str, Any]:
    """The map's ``meta`` of a FITS file without a ``meta`` document: config, hyperparameters and ``SEED``."""
    meta = {k: prov[k] for k in ("config", "hyperparameters") if k in prov}
    if "SEED" in header:
        meta["seed"] = int(header["SEED"])
    return meta
