"""dustgp._atomic: a file appears whole under its name or not at all, and an existing one is never replaced unasked."""

from __future__ import annotations

from pathlib import Path

import pytest

from dustgp._atomic import atomic_path


def _litter(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".")]


def test_a_finished_write_takes_the_name_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "map.fits.gz"
    with atomic_path(target, overwrite=False) as tmp:
        assert tmp.name.startswith(".map.fits.gz.")
        assert tmp.name.endswith(".fits.gz")  # writers choose compression from the suffixes
        tmp.write_text("data")
    assert target.read_text() == "data"
    assert not _litter(tmp_path)


def test_a_failed_write_leaves_no_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "map.nc"

    def write_half() -> None:
        with atomic_path(target, overwrite=False) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_half()
    assert not target.exists()
    assert not _litter(tmp_path)


def test_an_existing_file_is_replaced_only_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(FileExistsError, match="pass overwrite=True"), atomic_path(target, overwrite=False):
        pass
    assert target.read_text() == "old"
    with atomic_path(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_a_file_appearing_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "fit.ckpt"

    def race() -> None:
        with atomic_path(target, overwrite=False) as tmp:
            tmp.write_text("mine")
            target.write_text("theirs")  # another process got there first

    with pytest.raises(FileExistsError):
        race()
    assert target.read_text() == "theirs"
    assert not _litter(tmp_path)


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such directory"), atomic_path(tmp_path / "no" / "x.nc", False):
        pass
