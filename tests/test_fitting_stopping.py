"""dustgp.fitting.stopping: the stop rules, and Ctrl-C or SIGTERM ending a fit."""

import os
import signal

import numpy as np
import pyro
import pytest

import dustgp
from dustgp.fitting import FitConfig, load_checkpoint
from dustgp.fitting.stopping import SPREAD_TOLERANCE, StepConvergence
from fitting_skies import TRAIN, svi_fit, svi_sky


@pytest.fixture(scope="module")
def sky():
    return svi_sky()


@pytest.fixture(scope="module")
def fitted():
    return svi_fit()


def test_ctrl_c_keeps_the_last_checkpoint(sky, tmp_path, monkeypatch) -> None:
    calls = {"n": 0}
    step = pyro.infer.SVI.step

    def interrupted_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(pyro.infer.SVI, "step", interrupted_step)
    ckpt = tmp_path / "fit.ckpt"
    options = {"inducing_points": 40, "method": "svi", "progress": False}
    result = dustgp.fit(sky.catalog, TRAIN, max_iterations=50, checkpoint=ckpt, **options)
    assert result.stopped_by == "interrupted"
    assert load_checkpoint(ckpt)["iterations"] == 4


def test_sigterm_is_handled_like_ctrl_c(sky, tmp_path, monkeypatch) -> None:
    # a batch scheduler's time limit sends SIGTERM: the fit stops, writes its checkpoint, and says why
    calls = {"n": 0}
    step = pyro.infer.SVI.step

    def terminated_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(pyro.infer.SVI, "step", terminated_step)
    ckpt = tmp_path / "fit.ckpt"
    options = {"inducing_points": 40, "method": "svi", "progress": False}
    result = dustgp.fit(sky.catalog, TRAIN, max_iterations=50, checkpoint=ckpt, **options)
    assert result.stopped_by == "terminated"
    assert not result.converged
    assert load_checkpoint(ckpt)["iterations"] in (4, 5)  # the signal lands during or right after step 5
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back


def _first_allowed(condition_at: list[bool], config: FitConfig) -> int | None:
    """The iteration (1-based) at which a stop rule whose condition is ``condition_at[k - 1]`` after iteration k
    must end an SVI fit: the first one at or after ``min_iterations``."""
    start = min(config.min_iterations, config.max_iterations)
    return next((k for k, holds in enumerate(condition_at, start=1) if holds and k >= start), None)


def test_paper_stop_rule_fires_at_its_first_chance(sky) -> None:
    paper = dustgp.fit(
        sky.catalog, TRAIN, max_iterations=2000, stop="elbo", progress=False, inducing_points=60, method="svi"
    )
    cfg, losses = paper.config, paper.losses
    # the rule, recomputed from the recorded ELBO history: the last elbo_window values vary by < elbo_tol
    holds = [
        k >= cfg.elbo_window
        and np.ptp(losses[k - cfg.elbo_window : k]) / abs(losses[k - cfg.elbo_window : k].mean()) < cfg.elbo_tol
        for k in range(1, losses.size + 1)
    ]
    assert paper.stopped_by == "elbo rule"
    assert paper.iterations == losses.size == _first_allowed(holds, cfg)  # neither earlier nor later


def test_map_rule_stops_where_its_record_says(fitted) -> None:
    # the map rule, replayed from the recorded (iteration, change) checks: it holds once `patience` checks in a row
    # had changes below tol, until a check at or above tol resets it
    cfg = fitted.config
    at_check = {int(it): change for it, change in fitted.map_changes}
    assert at_check, "the map rule recorded no change"
    assert all(it % cfg.check_every == 0 for it in at_check)
    passed, holds = 0, []
    for k in range(1, fitted.iterations + 1):
        if k in at_check:
            passed = passed + 1 if at_check[k] < cfg.tol else 0
        holds.append(passed >= cfg.patience)
    expected = _first_allowed(holds, cfg)
    if expected is None:  # the rule never held: the fit ran to its bound and says it did not converge
        assert (fitted.stopped_by, fitted.iterations, fitted.converged) == ("max_iterations", cfg.max_iterations, False)
    else:
        assert (fitted.stopped_by, fitted.iterations, fitted.converged) == ("map converged", expected, True)


def test_the_step_rule_holds_after_patience_or_at_the_end_of_a_contraction() -> None:
    tol, elbo_tol = 1e-2, 1.0
    # changes shrinking by 0.4 per step: the tail after a change x sums to x * 0.4 / 0.6 = 0.67 x
    rule = StepConvergence(tol, elbo_tol, patience=3)
    shrinking = [(0.1 * 0.4**k, 1.0 * 0.4**k, 10.0 * 0.4**k) for k in range(6)]
    holds = [rule.update(*changes, full=True) for changes in shrinking]
    # step 3 (0.0064, 0.064, 0.64) is the first within the tolerances; two shrinking steps are behind it and its
    # tail (0.0043, 0.043 against SPREAD_TOLERANCE * tol = 0.1, 0.43 nats) is within them
    assert shrinking[2][0] > tol > shrinking[3][0]
    assert SPREAD_TOLERANCE * tol > shrinking[3][1]
    assert holds == [False, False, False, True, True, True]

    # the same changes from steps shortened by the line search: the contraction is not trusted, patience decides
    rule = StepConvergence(tol, elbo_tol, patience=3)
    assert [rule.update(*changes, full=False) for changes in shrinking] == [False, False, False, False, False, True]

    # slowly shrinking changes (ratio 0.9): each within the tolerances, yet the tail (9 x) is not, so patience decides
    rule = StepConvergence(tol, elbo_tol, patience=3)
    slow = [(0.008 * 0.9**k, 0.08 * 0.9**k, 0.8 * 0.9**k) for k in range(4)]
    assert [rule.update(*changes, full=True) for changes in slow] == [False, False, True, True]

    # a change that grows again ends the contraction; a failing step resets the count
    rule = StepConvergence(tol, elbo_tol, patience=5)
    assert not rule.update(0.004, 0.04, 0.4, full=True)
    assert not rule.update(0.001, 0.01, 0.1, full=True)
    assert not rule.update(0.0015, 0.005, 0.05, full=True)
    assert not rule.update(0.02, 0.01, 0.1, full=True)
    assert rule.passed == 0
    # steps of a warm-up never pass
    assert not any(rule.update(0.0, 0.0, 0.0, full=True, counts=False) for _ in range(5))

    # the state round-trips (a resumed fit continues the same rule)
    rule = StepConvergence(tol, elbo_tol, patience=3)
    for changes in shrinking[:3]:
        rule.update(*changes, full=True)
    resumed = StepConvergence(tol, elbo_tol, patience=3)
    resumed.restore(rule.state())
    assert resumed.update(*shrinking[3], full=True)
    assert rule.update(*shrinking[3], full=True)
