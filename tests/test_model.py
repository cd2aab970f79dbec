"""dustgp.model: the GP prior and q(v), its joint samples, its training backward and its parameters."""

import torch

from dustgp.model import DustGP


def test_whitened_weights_match_the_generic_cholesky_backward() -> None:
    """Training's hand-written backward through L_zz⁻ᵀ v equals autograd through torch's Cholesky, in float64."""
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(40, 3, generator=gen, dtype=torch.float64) * 30
    gp = DustGP(z, mean=-3.0, scale=0.5, length_scale=(20.0, 25.0, 15.0))
    v = torch.randn(5, 40, generator=gen, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    inputs = [v, gp.inducing_points, gp.covar_module.raw_outputscale, gp.covar_module.base_kernel.raw_lengthscale]

    fast = gp.whitened_weights(v)
    generic = gp.projection(v, gp.inducing_cholesky())
    torch.testing.assert_close(fast, generic, rtol=1e-12, atol=0)
    for name, a, b in zip(
        ("v", "z", "alpha", "gamma"),
        torch.autograd.grad((fast * probe).sum(), inputs),
        torch.autograd.grad((generic * probe).sum(), inputs),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * b.abs().max().item(), msg=name)


def test_sampled_phi_has_the_projected_covariance() -> None:
    # joint samples c + K_xz L_zz⁻ᵀ v with v ~ N(m, S) have covariance A S Aᵀ, A = K_xz L_zz⁻ᵀ
    gen = torch.Generator().manual_seed(1)
    z = torch.rand(20, 3, generator=gen, dtype=torch.float64) * 60
    gp = DustGP(z, mean=-3.0, scale=0.3, length_scale=20.0)
    m = torch.randn(20, generator=gen, dtype=torch.float64)
    lower = torch.randn(20, 20, generator=gen, dtype=torch.float64).tril(-1) * 0.2
    diagonal = torch.rand(20, generator=gen, dtype=torch.float64).sqrt()
    gp.set_variational(m, lower + torch.diag(diagonal))
    x = (torch.rand(12, 3, generator=gen, dtype=torch.float64) * 60) / gp.length_unit
    n = 50_000
    with torch.no_grad():
        l_zz = gp.inducing_cholesky()
        phi = gp.phi(x, gp.projection(gp.sample_whitened(n, generator=gen), l_zz))
        a = torch.linalg.solve_triangular(l_zz, gp.cross_covariance(x).T, upper=False).T
        l_q = gp.variational_scale_tril()
        expected = a @ l_q @ l_q.T @ a.T
    sample = torch.cov(phi.T)
    diag = expected.diagonal()
    # standard error of a sample covariance: sqrt((Σ_jj Σ_kk + Σ_jk²) / n); 5 of them over 78 entries
    error = torch.sqrt((diag[:, None] * diag[None, :] + expected**2) / n)
    assert float(((sample - expected).abs() / error).max()) < 5.0


def test_parameter_groups_cover_every_parameter_once() -> None:
    # optimisers choose their rates by role: a parameter in no group, or in two, would be trained by accident
    for learn in (True, False):
        gp = DustGP(torch.randn(6, 3) * 20, mean=-3.0, learn_inducing_locations=learn)
        grouped = [name for names in gp.parameter_groups().values() for name in names]
        assert sorted(grouped) == sorted(name for name, _ in gp.named_parameters())
        assert len(grouped) == len(set(grouped))
        assert bool(gp.parameter_groups()["inducing_points"]) == learn


def test_set_variational_round_trips_the_scale_tril() -> None:
    gen = torch.Generator().manual_seed(3)
    gp = DustGP(torch.randn(7, 3, generator=gen, dtype=torch.float64) * 20, mean=-3.0)
    assert torch.equal(gp.variational_scale_tril().detach(), torch.eye(7, dtype=torch.float64))  # q(v) = prior
    m = torch.randn(7, generator=gen, dtype=torch.float64)
    l_q = torch.randn(7, 7, generator=gen, dtype=torch.float64).tril(-1)
    l_q += torch.diag(torch.rand(7, generator=gen, dtype=torch.float64) + 0.1)
    gp.set_variational(m, l_q + torch.randn(7, 7, generator=gen, dtype=torch.float64).triu(1))  # upper: not read
    torch.testing.assert_close(gp.variational_mean.detach(), m, rtol=0, atol=0)
    torch.testing.assert_close(gp.variational_scale_tril().detach(), l_q, rtol=1e-15, atol=0)
