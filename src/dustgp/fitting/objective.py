"""The ELBO of the paper's scheme as a Pyro program: the model, the guide, and the KL in closed form.

With ``method="svi"`` the ELBO (docs: Method §5, paper Eqs. 3-5) is estimated with Pyro's ``TraceMeanField_ELBO``:
32 Monte Carlo draws of the whitened inducing values, vectorised in one batch, each projected jointly onto the
training cells (:mod:`dustgp.model`), and the KL term in closed form. The likelihood of all stars enters through
the sufficient statistics of :class:`~dustgp.sightlines.GaussianStatistics`, so an iteration costs the same for
10⁴ or 10⁶ stars.
"""

from __future__ import annotations

import pyro
import pyro.distributions as pdist
import torch
from torch.distributions.kl import register_kl

from ..grid import Grid
from ..likelihood import StarLikelihood
from ..model import DustGP
from ..projection import Workspace
from ..sightlines import GaussianStatistics

__all__ = ["PYRO_MODULE", "Elbo"]

#: Name under which the model's parameters enter Pyro's parameter store (``pyro.module``).
PYRO_MODULE = "dustgp"


class _WhitenedPrior(pdist.Independent):
    """N(0, I) over the whitened inducing values; a class of its own so that its KL can be registered below."""


@register_kl(pdist.MultivariateNormal, _WhitenedPrior)
def _kl_to_whitened_prior(q: pdist.MultivariateNormal, p: _WhitenedPrior) -> torch.Tensor:
    # ½[tr S + mᵀm - M - ln det S] in closed form against N(0, I), O(M²): torch's generic MVN-MVN KL would
    # do an M × M triangular solve per step.
    l_q = q.scale_tril
    m = q.loc
    half_logdet = l_q.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    kl = 0.5 * ((l_q * l_q).sum((-1, -2)) + (m * m).sum(-1) - m.shape[-1]) - half_logdet
    return kl.expand(torch.broadcast_shapes(q.batch_shape, p.batch_shape))


class Elbo:
    """Pyro model and guide for one fit; tensors live on the fit's device and dtype."""

    def __init__(
        self,
        gp: DustGP,
        cells: torch.Tensor,
        stats: GaussianStatistics,
        grid: Grid,
        likelihood: StarLikelihood | None = None,
    ) -> None:
        self.gp, self.cells, self.stats, self.likelihood = gp, cells, stats, likelihood
        self.shape = (grid.n_d, grid.n_columns)
        self.workspace = Workspace()

    def model(self) -> None:
        pyro.module(PYRO_MODULE, self.gp)
        m = self.gp.variational_mean
        prior = _WhitenedPrior(pdist.Normal(torch.zeros_like(m), torch.ones_like(m)), 1)
        v = pyro.sample("v", prior)
        weights = self.gp.whitened_weights(v.reshape(-1, m.shape[0]))
        density = torch.pow(10.0, self.gp.phi(self.cells, weights, self.workspace))
        if self.likelihood is None:  # Gaussian, one node per star: the sufficient statistics
            log_l = self.stats.log_likelihood(density.reshape(-1, *self.shape))
        else:
            log_l = self.likelihood.log_likelihood(density.reshape(-1, density.shape[-1])).to(density.dtype)
        pyro.factor("stars", log_l.reshape(v.shape[:-1]))

    def guide(self) -> None:
        pyro.module(PYRO_MODULE, self.gp)
        q = pdist.MultivariateNormal(self.gp.variational_mean, scale_tril=self.gp.variational_scale_tril())
        pyro.sample("v", q)

    @torch.no_grad()
    def sample_density(self, n: int) -> torch.Tensor:
        """``n`` joint draws of the density on the training cells from q, mag/pc, shape ``(n, n_cells)``."""
        q = pdist.MultivariateNormal(self.gp.variational_mean, scale_tril=self.gp.variational_scale_tril())
        weights = self.gp.whitened_weights(q.sample((n,)))
        return torch.pow(10.0, self.gp.phi(self.cells, weights, self.workspace))

    @torch.no_grad()
    def mean_log_density(self) -> torch.Tensor:
        """log10 density of the posterior-mean phi on the training cells (no sampling)."""
        weights = self.gp.projection(self.gp.variational_mean[None, :], self.gp.inducing_cholesky())
        return self.gp.phi(self.cells, weights, self.workspace)[0]
