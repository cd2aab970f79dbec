"""dustgp.fitting.objective: the paper's ELBO as a Pyro program."""

import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from dustgp.fitting.objective import Elbo
from dustgp.grid import lbd_to_xyz
from dustgp.model import DustGP
from dustgp.sightlines import GaussianStatistics, Sightlines
from fitting_skies import TRAIN, svi_sky


@pytest.fixture(scope="module")
def sky():
    return svi_sky()


def test_every_trained_parameter_receives_a_gradient(sky) -> None:
    sl = Sightlines.from_positions(TRAIN, sky.catalog.l, sky.catalog.b, sky.catalog.distance)
    stats = GaussianStatistics.from_stars(sl, sky.catalog.extinction, sky.catalog.extinction_err)
    z = torch.as_tensor(lbd_to_xyz(sky.catalog.l[:50], sky.catalog.b[:50], sky.catalog.distance[:50]))
    gp = DustGP(z, mean=-2.8, scale=0.3, length_scale=20.0)
    cells = torch.as_tensor(TRAIN.cell_centers_xyz()) / gp.length_unit
    objective = Elbo(gp, cells, stats, TRAIN)
    elbo = TraceMeanField_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=0)
    with pyro.get_param_store().scope():
        elbo.differentiable_loss(objective.model, objective.guide).backward()
    names = [name for name, p in gp.named_parameters() if p.requires_grad]
    assert len(names) == 7  # inducing locations, m, the off-diagonal of L_q, log diag(L_q), c, alpha, gamma
    for name, p in gp.named_parameters():
        assert p.grad is not None, name
        # every entry: an entry that never receives a gradient (GPyTorch's unused diagonal of L_q was one) is a
        # dead parameter
        assert torch.count_nonzero(p.grad) == p.numel(), name


def test_kl_to_the_whitened_prior_is_the_gaussian_kl() -> None:
    # the closed form registered for q(v) against N(0, I) equals torch's generic Gaussian KL
    from dustgp.fitting.objective import _WhitenedPrior

    gen = torch.Generator().manual_seed(2)
    m = torch.randn(6, generator=gen, dtype=torch.float64)
    l_q = torch.randn(6, 6, generator=gen, dtype=torch.float64).tril(-1) * 0.3 + torch.diag(
        torch.rand(6, generator=gen, dtype=torch.float64) + 0.2
    )
    q = pyro.distributions.MultivariateNormal(m, scale_tril=l_q)
    prior = _WhitenedPrior(pyro.distributions.Normal(torch.zeros(6, dtype=torch.float64), 1.0), 1)
    generic = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(m, scale_tril=l_q),
        torch.distributions.MultivariateNormal(torch.zeros(6, dtype=torch.float64), torch.eye(6, dtype=torch.float64)),
    )
    torch.testing.assert_close(torch.distributions.kl_divergence(q, prior), generic, rtol=1e-12, atol=1e-12)
