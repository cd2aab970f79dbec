"""kill -9, SIGTERM and Ctrl-C during a fit and during a write, each followed by a resume that ends where the
uninterrupted run ends (issue 11).

The interrupted runs are the ``dustgp fit`` command in a child process; the uninterrupted run and the resumes run
in this process through :func:`dustgp.cli.main` (a child costs ~20 s of imports on a loaded machine). A write is
interrupted by a small launcher that pauses inside the Nth write of a file, after its data are written to the
temporary file and before they are flushed and renamed, until the test has sent its signal.

Tolerances: the fit is ``method="newton"``, float64 and deterministic; a resume restores its parameters, step
count, stop-rule streak and L-BFGS memory, so it takes the same steps. The parameters pass once through the
checkpoint's Cholesky round trip (q's covariance stored as a factor of S, restarted as a factor of S⁻¹), which
moves them by ~1e-13 relative; over six steps that stays far below 1e-9 in the ELBO. Map summaries are computed
in float32 (eps 1.2e-7), so maps are compared to 1e-6.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dustgp.cli import main
from dustgp.fitting import load_checkpoint
from dustgp.io import read_map

STEPS = 6
RUN = f"""
[simulate]
n_stars = 300
n_clumps = 1
seed = 4
region = {{ l = [60, 70, 6], b = [-4, 4, 3], d = [150, 300, 8] }}

[grid]
l = [60, 70, 3]
b = [-4, 4, 2]
d = [150, 300, 5]
ghost_cells = 1

[fit]
method = "newton"
inducing_points = 20
length_scale = 20.0
max_iterations = {STEPS}
stop = "none"
checkpoint_every = 1
seed = 1

[predict]
refine = 1
samples = 20

[output]
formats = ["netcdf"]
figures = false
"""

LAUNCHER = '''
"""dustgp fit, pausing inside the Nth write of one file until the marker file is removed."""
import os
import sys
import time
from pathlib import Path

import signal

import dustgp._atomic as atomic
from dustgp.cli import main

# Ctrl-C as at a terminal: a child started from a background job inherits SIGINT ignored (POSIX shells ignore it
# in asynchronous commands), and Python then never installs the handler that raises KeyboardInterrupt
signal.signal(signal.SIGINT, signal.default_int_handler)

marker, target, nth = Path(os.environ["PAUSE_MARKER"]), os.environ["PAUSE_TARGET"], int(os.environ["PAUSE_AT"])
flush = atomic._fsync
seen = 0


def paused(path, *, directory=False):
    global seen
    if not directory and path.name.startswith(f".{target}."):
        seen += 1
        if seen == nth:  # the temporary holds the data; not yet flushed, not yet renamed
            marker.touch()
            deadline = time.monotonic() + 120
            while marker.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
    return flush(path, directory=directory)


atomic._fsync = paused
sys.exit(main(sys.argv[1:]))
'''

#: exit status of the child for each signal: killed outright, or the fit's own status (128 + the signal)
STATUS = {signal.SIGKILL: -signal.SIGKILL, signal.SIGTERM: 143, signal.SIGINT: 130}


@pytest.fixture(scope="module")
def run_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run") / "run.toml"
    path.write_text(RUN)
    return path


@pytest.fixture(scope="module")
def uninterrupted(run_file) -> Path:
    out = run_file.parent / "uninterrupted"
    assert main(["fit", str(run_file), "--out", str(out), "--quiet"]) == 0
    return out


def _temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(".*") if ".tmp" in p.name)


def _interrupt(run_file: Path, out: Path, sig: int, where: str) -> subprocess.CompletedProcess:
    """Start ``dustgp fit`` in a child and send ``sig`` mid-fit or mid-write; wait for it to end."""
    marker = out.parent / f"{out.name}.paused"
    env = {**os.environ, "PAUSE_MARKER": str(marker), "PAUSE_TARGET": "fit.ckpt" if where != "map" else "map.nc"}
    env["PAUSE_AT"] = {"fit": "1000000", "checkpoint": "3", "map": "1"}[where]
    launcher = out.parent / "launcher.py"
    launcher.write_text(LAUNCHER)
    child = subprocess.Popen(
        [sys.executable, str(launcher), "fit", str(run_file), "--out", str(out), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = marker if where != "fit" else out / "fit.ckpt"  # mid-fit: once the first step is checkpointed
    deadline = time.monotonic() + 300
    while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert child.poll() is None, f"the fit ended before it could be interrupted: {child.communicate()}"
    child.send_signal(sig)
    time.sleep(0.2)  # let the handler record the signal before the paused write goes on
    marker.unlink(missing_ok=True)
    stdout, stderr = child.communicate(timeout=300)
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def _assert_same_result(out: Path, reference: Path) -> None:
    done, expected = load_checkpoint(out / "fit.ckpt"), load_checkpoint(reference / "fit.ckpt")
    assert done["iterations"] == expected["iterations"] == STEPS
    np.testing.assert_allclose(done["losses"].numpy(), expected["losses"].numpy(), rtol=1e-9)
    got, want = read_map(out / "map.nc"), read_map(reference / "map.nc")
    np.testing.assert_allclose(got.density_percentiles, want.density_percentiles, rtol=1e-6)
    np.testing.assert_allclose(got.extinction_percentiles, want.extinction_percentiles, rtol=1e-6)


CASES = [
    pytest.param(signal.SIGKILL, "checkpoint", id="kill-9-mid-write"),
    pytest.param(signal.SIGTERM, "fit", id="sigterm-mid-fit", marks=pytest.mark.slow),
    pytest.param(signal.SIGKILL, "fit", id="kill-9-mid-fit", marks=pytest.mark.slow),
    pytest.param(signal.SIGINT, "fit", id="ctrl-c-mid-fit", marks=pytest.mark.slow),
    pytest.param(signal.SIGTERM, "checkpoint", id="sigterm-mid-write", marks=pytest.mark.slow),
    pytest.param(signal.SIGINT, "checkpoint", id="ctrl-c-mid-write", marks=pytest.mark.slow),
    pytest.param(signal.SIGKILL, "map", id="kill-9-mid-map-write", marks=pytest.mark.slow),
    pytest.param(signal.SIGTERM, "map", id="sigterm-mid-map-write", marks=pytest.mark.slow),
    pytest.param(signal.SIGINT, "map", id="ctrl-c-mid-map-write", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("sig", "where"), CASES)
def test_interrupted_then_resumed_ends_as_the_uninterrupted_run(run_file, uninterrupted, tmp_path, sig, where) -> None:
    out = tmp_path / "out"
    interrupted = _interrupt(run_file, out, sig, where)
    assert interrupted.returncode == STATUS[sig], interrupted.stderr
    saved = load_checkpoint(out / "fit.ckpt")  # always a whole checkpoint, whatever was cut
    if sig == signal.SIGKILL:
        if where == "checkpoint":  # cut between the data and the rename: the previous checkpoint stands
            assert saved["iterations"] == 2
        if where != "fit":
            assert _temporaries(out), "a kill mid-write leaves its temporary behind (removed by the next run)"
    elif where == "map":  # the fit had ended: its checkpoint stands, the map under way is not written, no litter
        assert saved["iterations"] == STEPS
        assert not _temporaries(out)
        assert not (out / "map.nc").exists()
    else:
        assert saved["stopped_by"] == {signal.SIGTERM: "terminated", signal.SIGINT: "interrupted"}[sig]
        assert not _temporaries(out)
        assert saved["iterations"] < STEPS
    if where != "map":
        assert not (out / "map.nc").exists()  # an interrupted fit writes no maps
    assert main(["fit", str(run_file), "--out", str(out), "--resume", "--quiet"]) == 0
    assert not _temporaries(out)
    _assert_same_result(out, uninterrupted)
