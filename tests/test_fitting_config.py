"""dustgp.fitting.config: the options of a fit and the checks on them."""

import pytest

from dustgp.fitting import FitConfig


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="stop"):
        FitConfig(stop="sometimes")
    with pytest.raises(ValueError, match="unknown options"):
        FitConfig.from_dict({"inducing_pionts": 10})


def test_config_round_trips_through_a_dict() -> None:
    # what checkpoints and maps store is what a resumed fit reads back; max_iterations follows the method
    config = FitConfig(method="svi", length_scale=[10.0, 20.0, 30.0], seed=7)
    assert config.max_iterations == 3000
    assert FitConfig.from_dict(config.to_dict()) == config
    assert FitConfig().max_iterations == 200


def test_a_default_iteration_bound_follows_a_new_method() -> None:
    # dustgp.fit(catalog, grid, method="svi") updates a default FitConfig(): SVI's bound, not newton's
    assert FitConfig().updated(method="svi").max_iterations == 3000
    assert FitConfig(method="svi").updated(method="newton").max_iterations == 200
    assert FitConfig().updated(method="svi", max_iterations=50).max_iterations == 50  # a bound given is kept
    assert FitConfig(max_iterations=70).updated(method="svi").max_iterations == 70  # one chosen before, too
    assert FitConfig().updated(seed=3).max_iterations == 200
