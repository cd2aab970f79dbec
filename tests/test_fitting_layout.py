"""Where the inducing points start (dustgp.fitting.layout): greedy conditional variance against its brute-force
definition, and the layouts a fit gets."""

import numpy as np
import pytest

from dustgp.catalog import Catalog
from dustgp.fitting import FitConfig
from dustgp.fitting.layout import greedy_variance, inducing_init
from dustgp.grid import Grid, lbd_to_xyz


def _rbf(a: np.ndarray, b: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * (((a[:, None, :] - b[None, :, :]) / gamma) ** 2).sum(-1))


def test_each_pick_has_the_largest_conditional_variance() -> None:
    # brute force: the prior variance of every candidate given those taken, k(x,x) - k_xZ K_ZZ^-1 k_Zx, by a solve
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 100, (60, 3))
    gamma = np.array([20.0, 15.0, 10.0])
    taken = greedy_variance(x, 12, gamma)
    assert taken[0] == 0  # all variances equal: the first candidate
    for j in range(1, len(taken)):
        z = x[taken[:j]]
        k_xz = _rbf(x, z, gamma)
        conditional = 1.0 - np.einsum("ij,ij->i", k_xz, np.linalg.solve(_rbf(z, z, gamma), k_xz.T).T)
        assert taken[j] == int(np.argmax(conditional))
        assert np.max(conditional[taken[:j]]) < 1e-6


def test_points_on_a_line_go_far_first() -> None:
    # 0, 1, 5, 10 scale lengths: after 0 the farthest (10), then 5 (nearly independent of both), then 1
    x = np.array([[0.0, 0, 0], [1.0, 0, 0], [5.0, 0, 0], [10.0, 0, 0]])
    assert greedy_variance(x, 4, np.ones(3)).tolist() == [0, 3, 2, 1]


def test_duplicates_are_not_taken_twice() -> None:
    x = np.repeat(np.array([[0.0, 0, 0], [50.0, 0, 0], [0.0, 50, 0]]), 4, axis=0)
    taken = greedy_variance(x, 10, np.full(3, 10.0))
    assert sorted(x[taken].tolist()) == sorted([[0.0, 0, 0], [50.0, 0, 0], [0.0, 50, 0]])


GRID = Grid(l=(60, 80, 8), b=(-5, 5, 6), d=(150, 300, 12), ghost_cells=2)


def _catalog(n: int, seed: int = 0) -> Catalog:
    rng = np.random.default_rng(seed)
    l, b = rng.uniform(60, 80, n), rng.uniform(-5, 5, n)
    d = 150 + 150 * rng.uniform(0, 1, n) ** (1 / 3)
    return Catalog.from_arrays(l, b, d, 0.001 * d, np.full(n, 0.05))


def _nearest(z: np.ndarray) -> np.ndarray:
    gaps = np.linalg.norm(z[:, None] - z[None], axis=-1)
    np.fill_diagonal(gaps, np.inf)
    return gaps.min(axis=1)


def test_greedy_layout_spreads_the_points() -> None:
    catalog = _catalog(3000)
    greedy = inducing_init(catalog, GRID, 80, np.random.default_rng(1), [20.0, 20.0, 20.0])
    random = inducing_init(catalog, GRID, 80, np.random.default_rng(1), 20.0, layout="random")
    assert greedy.shape == random.shape == (80, 3)
    # a Poisson layout crowds some points and leaves gaps; the greedy one keeps every point clear of the others
    assert _nearest(greedy).min() > 2 * _nearest(random).min()
    assert np.median(_nearest(greedy)) > np.median(_nearest(random))
    # the foreground, where no star lies, gets points too (ghost-cell centres, in front of d_min)
    assert np.any(np.linalg.norm(greedy, axis=1) < GRID.d_min)


def test_more_points_than_candidates_are_jittered_apart() -> None:
    catalog = _catalog(5)
    z = inducing_init(catalog, GRID.with_ghost_cells(0), 12, np.random.default_rng(0), 20.0)
    assert z.shape == (12, 3)
    assert _nearest(z).min() > 0
    stars = lbd_to_xyz(catalog.l, catalog.b, catalog.distance)
    assert all(np.min(np.linalg.norm(stars - p, axis=1)) < 1e-9 for p in z[:5])


def test_a_bad_layout_is_named() -> None:
    with pytest.raises(ValueError, match="inducing_layout: expected one of"):
        FitConfig(inducing_layout="grid")
    with pytest.raises(ValueError, match="inducing_layout"):
        inducing_init(_catalog(10), GRID, 4, np.random.default_rng(0), 20.0, layout="grid")
