"""dustgp.fitting.checkpoint: checkpoints that load without code, resume the same fit, and read earlier layouts."""

import numpy as np
import pytest
import torch

import dustgp
from dustgp.fitting import load_checkpoint, load_fit
from fitting_skies import SMALL_FIT, TRAIN, svi_fit, svi_sky


@pytest.fixture(scope="module")
def sky():
    return svi_sky()


@pytest.fixture(scope="module")
def fitted():
    return svi_fit()


_OLD = "variational_strategy."
_OLD_Q = "variational_strategy._variational_distribution."


def _as_legacy(payload: dict, *, log_diagonal: bool = True) -> dict:
    """``payload`` as written while q(v) and the inducing locations lived in GPyTorch's ``VariationalStrategy``:
    its parameter names and bookkeeping buffers, its M × M factor, and SVI's optimiser state under those names.

    Without ``log_diagonal``, as written before log diag(L_q) had a parameter of its own: L_q's diagonal was then
    that of GPyTorch's factor, whose sign was ignored (stored negative here to check that).
    """
    state = dict(payload["model"])
    size = state["variational_mean"].shape[0]
    lower = tuple(torch.tril_indices(size, size, -1))

    def full(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(size, size, dtype=values.dtype).index_put(lower, values)

    log_diag = state.pop("variational_log_diag")
    factor = full(state.pop("variational_lower")) - torch.diag(log_diag.exp())
    legacy = {
        _OLD + "inducing_points": state.pop("inducing_points"),
        _OLD + "variational_params_initialized": torch.tensor(1),
        _OLD + "updated_strategy": torch.tensor(True),
        _OLD_Q + "variational_mean": state.pop("variational_mean"),
        _OLD_Q + "chol_variational_covar": factor,
        **state,
    }
    if log_diagonal:
        legacy["variational_log_diag"] = log_diag
    names = {
        "inducing_points": _OLD + "inducing_points",
        "variational_mean": _OLD_Q + "variational_mean",
        "variational_lower": _OLD_Q + "chol_variational_covar",
    }
    optimizer = {}
    for name, optim_state in payload["optimizer"].items():
        module, divider, parameter = name.rpartition("$$$")
        if parameter == "variational_lower":
            moments = optim_state["state"]
            optim_state = {
                **optim_state,
                "state": {k: {key: full(v) if v.ndim == 1 else v for key, v in m.items()} for k, m in moments.items()},
            }
        optimizer[module + divider + names.get(parameter, parameter)] = optim_state
    return {**payload, "model": legacy, "optimizer": optimizer}


@pytest.mark.parametrize("legacy", [False, True])
def test_checkpoint_resumes_to_the_same_state(sky, tmp_path, legacy) -> None:
    # legacy: the checkpoint rewritten in the layout of GPyTorch's VariationalStrategy resumes the same fit too
    options = {**SMALL_FIT, "inducing_points": 60, "stop": "none", "progress": False}
    straight = dustgp.fit(sky.catalog, TRAIN, max_iterations=12, **options)
    ckpt = tmp_path / "fit.ckpt"
    dustgp.fit(sky.catalog, TRAIN, max_iterations=6, checkpoint=ckpt, **options)
    assert load_checkpoint(ckpt)["iterations"] == 6
    if legacy:
        old = _as_legacy(torch.load(ckpt, weights_only=True))
        assert "variational_lower" not in old["model"]
        assert "dustgp$$$variational_lower" not in old["optimizer"]
        torch.save(old, ckpt)
    resumed = dustgp.fit(sky.catalog, TRAIN, resume=ckpt, max_iterations=12, **options)
    assert resumed.iterations == 12
    np.testing.assert_allclose(resumed.losses, straight.losses, rtol=1e-5)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_checkpoint_loads_without_code_and_predicts(sky, fitted, tmp_path) -> None:
    path = fitted.save(tmp_path / "fit.ckpt")
    torch.load(path, weights_only=True)  # no pickled objects: loads with weights_only
    again = load_fit(path)
    assert again.grid == TRAIN
    a = fitted.predict(TRAIN, samples=10, seed=2, progress=False)
    b = again.predict(TRAIN, samples=10, seed=2, progress=False)
    np.testing.assert_allclose(a.density_mean, b.density_mean, rtol=1e-5)


def test_checkpoint_from_before_the_log_diagonal_loads(fitted, tmp_path) -> None:
    # Earlier checkpoints kept diag(L_q) as the diagonal of GPyTorch's factor, with no variational_log_diag.
    payload = torch.load(fitted.save(tmp_path / "fit.ckpt"), weights_only=True)
    l_q = fitted.model.variational_scale_tril().detach()
    torch.save(_as_legacy(payload, log_diagonal=False), tmp_path / "old.ckpt")
    again = load_fit(tmp_path / "old.ckpt")
    torch.testing.assert_close(again.model.variational_scale_tril(), l_q, rtol=1e-6, atol=0)


def test_checkpoint_of_gpytorchs_layout_loads_the_same_model(fitted, tmp_path) -> None:
    payload = torch.load(fitted.save(tmp_path / "fit.ckpt"), weights_only=True)
    torch.save(_as_legacy(payload), tmp_path / "old.ckpt")
    again = load_fit(tmp_path / "old.ckpt").model.state_dict()
    now = fitted.model.state_dict()
    assert list(again) == list(now)
    for name, value in now.items():
        torch.testing.assert_close(again[name], value, rtol=0, atol=0, msg=name)


def test_resume_refuses_other_stars(sky, tmp_path) -> None:
    ckpt = tmp_path / "fit.ckpt"
    dustgp.fit(sky.catalog, TRAIN, max_iterations=3, checkpoint=ckpt, progress=False, inducing_points=40)
    assert load_checkpoint(ckpt)["data_fingerprint"]
    other = sky.catalog.select(np.arange(len(sky.catalog)) % 2 == 0)
    with pytest.raises(dustgp.FitError, match="other stars"):
        dustgp.fit(other, TRAIN, resume=ckpt, max_iterations=6, progress=False)
    assert dustgp.fit(sky.catalog, TRAIN, resume=ckpt, max_iterations=6, progress=False).iterations == 6
