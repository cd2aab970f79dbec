"""dustgp.fitting.loop: what fit() refuses, and the global state it leaves alone."""

import numpy as np
import pyro
import pytest
import torch

import dustgp
from dustgp.grid import Grid
from dustgp.simulate import simulate
from fitting_skies import svi_sky


@pytest.fixture(scope="module")
def sky():
    return svi_sky()


def test_no_star_on_grid_is_an_error(sky) -> None:
    far = Grid(l=(200, 210, 3), b=(-5, 5, 3), d=(150, 350, 4))
    with pytest.raises(dustgp.FitError, match="no star"):
        dustgp.fit(sky.catalog, far, progress=False)


@pytest.mark.parametrize("method", ["newton", "svi"])
def test_fit_leaves_the_callers_random_state_and_pyro_params_alone(method) -> None:
    # A fit called between a caller's draws, inside the caller's Pyro program: the draws after it are those the
    # caller would have made without it, and the caller's Pyro parameters are there, unchanged, and alone.
    sky = simulate(Grid(l=(60, 70, 10), b=(-5, 5, 10), d=(150, 300, 10)), n_stars=300, n_clumps=1, seed=2)
    grid = Grid(l=(60, 70, 3), b=(-5, 5, 3), d=(150, 300, 5), ghost_cells=1)
    options = {"method": method, "inducing_points": 15, "max_iterations": 3, "stop": "none", "seed": 9}
    with torch.random.fork_rng(devices=[]), pyro.get_param_store().scope():
        torch.manual_seed(1234)
        mine = torch.Generator().manual_seed(5678)
        first = (torch.randn(3), torch.randn(3, generator=mine))
        pyro.param("scale", torch.tensor(2.5), constraint=torch.distributions.constraints.positive)
        global_state, my_state = torch.get_rng_state(), mine.get_state()
        expected = (torch.randn(3), torch.randn(3, generator=mine))  # the draws without the fit
        torch.set_rng_state(global_state)
        mine.set_state(my_state)

        result = dustgp.fit(sky.catalog, grid, progress=False, **options)

        assert result.iterations == 3
        after = (torch.randn(3), torch.randn(3, generator=mine))
        torch.testing.assert_close(after, expected, rtol=0, atol=0)
        assert not torch.equal(first[0], after[0])  # the check can fail: successive draws differ
        assert list(pyro.get_param_store().keys()) == ["scale"]
        torch.testing.assert_close(pyro.param("scale"), torch.tensor(2.5), rtol=1e-6, atol=0)


def test_same_seed_same_fit_whatever_the_global_random_state() -> None:
    # the fit draws from its own seeded state: the caller's global state does not change its result
    sky = simulate(Grid(l=(60, 70, 10), b=(-5, 5, 10), d=(150, 300, 10)), n_stars=300, n_clumps=1, seed=2)
    grid = Grid(l=(60, 70, 3), b=(-5, 5, 3), d=(150, 300, 5), ghost_cells=1)
    options = {"method": "svi", "inducing_points": 15, "max_iterations": 3, "stop": "none", "seed": 9}
    losses = []
    with torch.random.fork_rng(devices=[]):
        for state in (1, 2):
            torch.manual_seed(state)
            losses.append(dustgp.fit(sky.catalog, grid, progress=False, **options).losses)
    np.testing.assert_array_equal(losses[0], losses[1])
