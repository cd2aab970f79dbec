r"""Where a fit's inducing points start: spread by greedy conditional variance, or at random stars.

A sparse GP draws the field through its M inducing points; what they leave out, the conditional covariance
:math:`K_{xx} - K_{xz} K_{zz}^{-1} K_{zx}`, the stars cannot narrow, and the ELBO pays for it wherever stars see it.
Put at random star positions (a Poisson layout), some stretches of the volume lie far from every point while
elsewhere points crowd. The bound is then loose, and it pulls the hyperparameters toward fields the few points can
draw: long scale lengths and a wide prior, with bands too narrow (Bauer, van der Wilk & Rasmussen 2016; measured on
a sky drawn from the prior itself in the docs, Design notes, "A sky drawn from the prior").

``layout="greedy"`` spreads them instead by greedy conditional variance (Burt, Rasmussen & van der Wilk 2020, Sect.
4.1; the pivoted Cholesky factorisation, Harbrecht, Peters & Schneider 2012): among candidate positions (stars, and
the centres of the foreground ghost cells, where no star lies), take the one whose prior variance given the points
taken so far is largest, and repeat. For candidates :math:`x_i` and points taken :math:`z_1..z_j`, that variance is

.. math::

    \sigma_j^2(x_i) = k(x_i, x_i) - \sum_{t \le j} L_{it}^2, \qquad
    L_{i,j+1} = \frac{k(x_i, z_{j+1}) - \sum_{t \le j} L_{it} L_{z_{j+1} t}}{\sigma_j(z_{j+1})},

the columns of the candidates' pivoted Cholesky factor, at a cost of :math:`O(N M^2)` for N candidates. The kernel
is the RBF at the fit's starting scale lengths with unit variance; for a stationary kernel the choice is close to
taking, each time, the candidate farthest from all points so far in the metric of the scale lengths, so the
points cover the volume the stars cover, with no gaps and no crowds, and the foreground where the scale lengths
reach it. ``layout="random"`` keeps the random star positions (and a share of ghost-cell centres) of earlier
versions.
"""

from __future__ import annotations

import numpy as np
import torch

from ..catalog import Catalog
from ..grid import Grid, lbd_to_xyz

__all__ = ["INDUCING_LAYOUTS", "MAX_CANDIDATES", "greedy_variance", "inducing_init"]

INDUCING_LAYOUTS = ("greedy", "random")
#: Stars offered to the greedy choice at most (a random subset of them beyond): 20 000 candidates keep the factor
#: at 80 MB per thousand points, and offer each of M = 1000-3000 points seven or more places to choose from.
MAX_CANDIDATES = 20_000
#: A candidate whose conditional variance (in units of the prior's) is below this is drawn already.
_DRAWN = 1e-6


def greedy_variance(candidates: np.ndarray, m: int, length_scale: np.ndarray) -> np.ndarray:
    """Indices of up to ``m`` of ``candidates`` (pc, shape (N, 3)), in the order greedy conditional variance takes
    them under the RBF kernel of scale lengths ``length_scale`` (pc; three, or one for all axes).

    Fewer than ``m`` come back when every candidate is drawn by those taken (conditional variance below 1e-6 of the
    prior's): duplicates, or fewer distinct candidates than ``m``.
    """
    x = torch.as_tensor(np.asarray(candidates, dtype=float) / np.asarray(length_scale, dtype=float))
    n = x.shape[0]
    m = min(int(m), n)
    # the factor's transpose, one row per point taken: each step reads the rows so far and writes one, contiguously
    factor = torch.zeros((m, n), dtype=torch.float32)
    variance = torch.ones(n, dtype=torch.float64)
    taken: list[int] = []
    for j in range(m):
        i = int(torch.argmax(variance))
        if float(variance[i]) < _DRAWN:
            break
        taken.append(i)
        k = torch.exp(-0.5 * ((x - x[i]) ** 2).sum(dim=1)).to(torch.float32)
        row = k - factor[:j].T @ factor[:j, i]
        row /= float(variance[i]) ** 0.5
        factor[j] = row
        variance -= row.double() ** 2
        variance[i] = 0.0
    return np.asarray(taken, dtype=np.int64)


def inducing_init(
    catalog: Catalog,
    grid: Grid,
    m: int,
    rng: np.random.Generator,
    length_scale: float | list[float] | np.ndarray,
    layout: str = "greedy",
) -> np.ndarray:
    """Initial inducing locations (pc, shape (m, 3)) among the stars and the ghost cells' centres.

    ``layout="greedy"``: by :func:`greedy_variance` among at most :data:`MAX_CANDIDATES` random stars and every
    ghost-cell centre, under the RBF of ``length_scale`` (pc, one or three). ``"random"``: random star positions,
    and random ghost-cell centres in proportion to the ghost cells' share of the grid (no star lies in the ghost
    cells, so without inducing points there the foreground could not depart from the prior mean). Either way,
    points still wanting (fewer distinct candidates than ``m``) are random ones, jittered by 5% of the mean scale
    length so that no two coincide (K_zz would be singular).
    """
    if layout not in INDUCING_LAYOUTS:
        raise ValueError(f"inducing_layout: expected one of {INDUCING_LAYOUTS}, got {layout!r}")
    stars = lbd_to_xyz(catalog.l, catalog.b, catalog.distance)
    ghosts = grid.cell_centers_xyz().reshape(grid.n_d, grid.n_columns, 3)[: grid.ghost_cells].reshape(-1, 3)
    gamma = np.broadcast_to(np.asarray(length_scale, dtype=float), (3,))
    if layout == "greedy":
        if len(stars) > MAX_CANDIDATES:
            stars = stars[rng.choice(len(stars), size=MAX_CANDIDATES, replace=False)]
        candidates = np.concatenate([stars, ghosts])
        z = candidates[greedy_variance(candidates, m, gamma)]
        if len(z) == m:
            return z
        extra = candidates[rng.choice(len(candidates), size=m - len(z))]
        return np.concatenate([z, extra + rng.normal(scale=0.05 * float(gamma.mean()), size=extra.shape)])
    n_ghost = round(m * grid.ghost_cells / grid.n_d) if grid.ghost_cells else 0
    replace = m - n_ghost > len(stars)
    z = stars[rng.choice(len(stars), size=m - n_ghost, replace=replace)]
    z = np.concatenate([z, ghosts[rng.choice(len(ghosts), size=n_ghost, replace=n_ghost > len(ghosts))]])
    if replace or n_ghost > len(ghosts):
        z = z + rng.normal(scale=0.05 * float(gamma.mean()), size=z.shape)
    return z
