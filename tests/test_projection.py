"""The fused RBF projection against finite differences and against the plain autograd formula of the model."""

import pytest
import torch

from dustgp.projection import Workspace, rbf_apply, rbf_apply_mixed, rbf_cross_covariance, rbf_project

NAMES = ("x", "z", "gamma", "alpha", "weights")


@pytest.fixture(autouse=True)
def one_thread():
    """Run these small problems single-threaded: every BLAS call of a blocked product is otherwise a thread
    barrier, and on a busy 2-core machine a barrier can wait a whole scheduler slice (10 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def naive_project(x, z, gamma, alpha, weights):
    """K_xz @ weights exactly as ``DustGP.cross_covariance`` / ``DustGP.phi`` write it."""
    xs, zs = x / gamma, z / gamma
    sq = (xs * xs).sum(-1, keepdim=True) - 2.0 * xs @ zs.T + (zs * zs).sum(-1)
    return alpha * torch.exp(-0.5 * sq.clamp(min=0.0)) @ weights


def make_inputs(n, m, s, *, dtype, device="cpu", half_width=3.0, seed=0, x_grad=False):
    """Cells uniform in a cube (internal units), inducing points near random cells, anisotropic gamma."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, generator=gen, dtype=dtype) * 2 - 1) * half_width
    z = x[torch.randperm(n, generator=gen)[:m]] + 0.3 * torch.randn(m, 3, generator=gen, dtype=dtype)
    gamma = torch.tensor([1.0, 1.3, 0.7], dtype=dtype)
    alpha = torch.tensor(0.6, dtype=dtype)
    weights = torch.randn(m, s, generator=gen, dtype=dtype)
    tensors = [t.to(device) for t in (x, z, gamma, alpha, weights)]
    for i, t in enumerate(tensors):
        t.requires_grad_(i > 0 or x_grad)
    return tensors


def values_and_grads(fn, inputs, grad_out, **kwargs):
    out = fn(*inputs, **kwargs)
    grads = torch.autograd.grad(out, [t for t in inputs if t.requires_grad], grad_out)
    return out.detach(), grads


@pytest.mark.parametrize(
    "options",
    [{}, {"chunk_size": 3}, {"recompute": True}, {"recompute": True, "chunk_size": 2}, {"recompute": False}],
)
def test_gradcheck_float64(options):
    inputs = make_inputs(7, 5, 3, dtype=torch.float64, x_grad=True)
    assert torch.autograd.gradcheck(lambda *t: rbf_project(*t, **options), inputs)


def test_gradcheck_cross_covariance():
    inputs = make_inputs(6, 4, 1, dtype=torch.float64, x_grad=True)[:4]
    assert torch.autograd.gradcheck(rbf_cross_covariance, inputs)


@pytest.mark.parametrize("requires", [(1,), (2, 3), (4,), (3,), (0, 4)])
def test_only_requested_gradients(requires):
    """Subsets of inputs needing gradients (some skip the n × M backward entirely) still give exact ones."""
    inputs = make_inputs(9, 4, 2, dtype=torch.float64)
    for i, t in enumerate(inputs):
        t.requires_grad_(i in requires)
    assert torch.autograd.gradcheck(rbf_project, inputs)


@pytest.mark.parametrize("half_width", [3.0, 12.0])
def test_matches_naive_autograd_float32(half_width):
    """n=2000, M=300, S=8: values and all gradients agree with plain autograd to float32 accuracy.

    half_width=12 spreads the cells over many scale lengths, so most of K underflows (and the floor that
    avoids subnormals is exercised).
    """
    n, m, s = 2000, 300, 8
    inputs = make_inputs(n, m, s, dtype=torch.float32, half_width=half_width, x_grad=True)
    grad_out = torch.randn(n, s, generator=torch.Generator().manual_seed(1))
    out, grads = values_and_grads(rbf_project, inputs, grad_out)
    ref, ref_grads = values_and_grads(naive_project, inputs, grad_out)
    # Reference in float64 to tell which of the two float32 results is off, if any.
    inputs64 = [t.detach().double().requires_grad_(t.requires_grad) for t in inputs]
    exact, exact_grads = values_and_grads(naive_project, inputs64, grad_out.double())

    eps = torch.finfo(torch.float32).eps
    for name, a, b, c in zip(("out", *NAMES), (out, *grads), (ref, *ref_grads), (exact, *exact_grads), strict=True):
        # Sums over up to n·M terms: allow eps · sqrt(terms) relative to the largest entry.
        tol = 50 * eps * (n * m) ** 0.5 * c.abs().max().item()
        assert (a.double() - c).abs().max().item() < tol, name
        assert (a - b).abs().max().item() < 2 * tol, name
        torch.testing.assert_close(a, b, rtol=1e-4, atol=tol, msg=name)


@pytest.mark.parametrize("recompute", [False, True])
# Few blocks per call: each BLAS call is a thread barrier, which costs milliseconds on a busy 2-core machine.
@pytest.mark.parametrize("chunk_size", [97, 333, 5000])
def test_chunked_equals_unchunked(chunk_size, recompute):
    n, m, s = 1000, 120, 4
    inputs = make_inputs(n, m, s, dtype=torch.float64, x_grad=True)
    grad_out = torch.randn(n, s, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out, grads = values_and_grads(rbf_project, inputs, grad_out)
    out_c, grads_c = values_and_grads(rbf_project, inputs, grad_out, chunk_size=chunk_size, recompute=recompute)
    torch.testing.assert_close(out_c, out, rtol=1e-12, atol=1e-12)
    for name, a, b in zip(NAMES, grads_c, grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("recompute", [False, True])
def test_workspace_reuse_gives_the_same_values_and_gradients(recompute):
    """A shared workspace across calls, including two forwards before either backward, changes nothing."""
    workspace = Workspace()
    options = {"recompute": recompute, "chunk_size": 64, "workspace": workspace}
    first = make_inputs(300, 50, 3, dtype=torch.float64, seed=0, x_grad=True)
    second = make_inputs(300, 50, 3, dtype=torch.float64, seed=1, x_grad=True)
    grad_out = torch.randn(300, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    expected = [values_and_grads(rbf_project, inputs, grad_out) for inputs in (first, second)]

    # Both graphs alive at once: the second forward must not write into memory the first backward reads.
    out_1, out_2 = rbf_project(*first, **options), rbf_project(*second, **options)
    got = [
        (out.detach(), torch.autograd.grad(out, [t for t in inputs if t.requires_grad], grad_out))
        for out, inputs in ((out_2, second), (out_1, first))
    ][::-1]
    # And again, now that the buffers have been given back and are reused.
    got_again = [values_and_grads(rbf_project, inputs, grad_out, **options) for inputs in (first, second)]
    for (out, grads), (out_a, grads_a), (out_b, grads_b) in zip(expected, got, got_again, strict=True):
        torch.testing.assert_close(out_a, out, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out_b, out, rtol=1e-12, atol=1e-12)
        for name, a, b, c in zip(NAMES, grads, grads_a, grads_b, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10, msg=name)
            torch.testing.assert_close(c, a, rtol=1e-10, atol=1e-10, msg=name)


def test_store_threshold_switches_to_recompute(monkeypatch):
    """Above STORE_LIMIT_BYTES the backward recomputes E (nothing n × M kept); the gradients are the same."""
    import dustgp.projection as kernels

    inputs = make_inputs(300, 50, 3, dtype=torch.float64)
    grad_out = torch.ones(300, 3, dtype=torch.float64)
    stored = rbf_project(*inputs)
    assert stored.grad_fn.saved_tensors[-1].shape == (300, 50)
    monkeypatch.setattr(kernels, "STORE_LIMIT_BYTES", 1024)
    recomputed = rbf_project(*inputs)
    assert recomputed.grad_fn.saved_tensors[-1] is None
    grads_stored = torch.autograd.grad(stored, inputs[1:], grad_out)
    grads = torch.autograd.grad(recomputed, inputs[1:], grad_out)
    for name, a, b in zip(NAMES[1:], grads, grads_stored, strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_shapes_and_vector_weights():
    x, z, gamma, alpha, weights = make_inputs(11, 6, 3, dtype=torch.float64)
    out = rbf_project(x, z, gamma.reshape(1, 3), alpha.reshape(1), weights[:, 0])
    assert out.shape == (11,)
    out.sum().backward()
    assert gamma.grad.shape == (3,)
    assert alpha.grad.shape == ()
    torch.testing.assert_close(out, naive_project(x, z, gamma, alpha, weights[:, 0]))
    with pytest.raises(ValueError, match="rows"):
        rbf_project(x, z, gamma, alpha, weights[:5])
    with pytest.raises(ValueError, match="chunk_size"):
        rbf_project(x, z, gamma, alpha, weights, chunk_size=0)


def test_no_grad_mode():
    inputs = make_inputs(40, 10, 2, dtype=torch.float64)
    with torch.no_grad():
        out = rbf_project(*inputs, recompute=False)
        ref = naive_project(*inputs)
    assert out.grad_fn is None
    torch.testing.assert_close(out, ref)


def test_cross_covariance_matches_naive():
    x, z, gamma, alpha, _ = make_inputs(50, 20, 1, dtype=torch.float64)
    with torch.no_grad():
        k = rbf_cross_covariance(x, z, gamma, alpha)
        k_zz = rbf_cross_covariance(z, z, gamma, alpha)
        ref = naive_project(x, z, gamma, alpha, torch.eye(20, dtype=torch.float64))
    torch.testing.assert_close(k, ref)
    torch.testing.assert_close(k_zz.diagonal(), alpha.expand(20))
    assert (k_zz <= alpha).all()


def test_no_subnormals_far_apart():
    """Pairs ~12 scale lengths apart: float32 E is floored at a normal number, never subnormal."""
    x = torch.tensor([[0.0, 0.0, 0.0], [13.5, 0.0, 0.0], [40.0, 0.0, 0.0]])
    z = torch.zeros(1, 3)
    k = rbf_cross_covariance(x, z, torch.ones(3), torch.tensor(1.0))
    tiny = torch.finfo(torch.float32).tiny
    assert k[0, 0] == 1.0
    assert (k[1:] >= tiny).all()
    assert (k[1:] < 1e-36).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype, monkeypatch):
    import dustgp.projection as kernels

    n, m, s = 2000, 300, 8
    cpu = make_inputs(n, m, s, dtype=dtype, x_grad=True)
    gpu = make_inputs(n, m, s, dtype=dtype, device="cuda", x_grad=True)
    assert rbf_project(*gpu).grad_fn.saved_tensors[-1] is not None  # stored when it fits
    monkeypatch.setattr(kernels, "STORE_LIMIT_BYTES", 1024)
    assert rbf_project(*gpu).grad_fn.saved_tensors[-1] is None  # recomputed when it does not
    monkeypatch.undo()
    grad_out = torch.randn(n, s, dtype=dtype, generator=torch.Generator().manual_seed(3))
    out, grads = values_and_grads(rbf_project, cpu, grad_out)
    for options in ({}, {"recompute": True, "chunk_size": 500}):
        out_g, grads_g = values_and_grads(rbf_project, gpu, grad_out.cuda(), **options)
        tol = {"rtol": 1e-4, "atol": 1e-3} if dtype == torch.float32 else {}
        torch.testing.assert_close(out_g.cpu(), out, **tol)
        for name, a, b in zip(NAMES, grads_g, grads, strict=True):
            torch.testing.assert_close(a.cpu(), b, **tol, msg=name)


def test_mixed_precision_apply_is_within_the_float32_rounding_bound() -> None:
    """``rbf_apply_mixed`` against ``rbf_apply`` in float64, with weights that cancel as prediction's do (|W| ~ 1e4
    around a mean). Bound from rounding analysis (Higham 2002, §3.5): E and the deviations D rounded to float32
    (relative u = 2⁻²⁴ each) and a float32 inner product of length M add at most (M + 2) u Σ_j |E_ij| |D_jk| per
    entry; the float64 mean adds (M + 2) u₆₄ Σ_j |E_ij| |w_j|. Computing E itself from a float32 exponent (an
    error of u·|exponent| ≈ 1e-5 relative here) breaks it."""
    gen = torch.Generator().manual_seed(3)
    n, m, s = 400, 60, 16
    x = torch.rand(n, 3, generator=gen, dtype=torch.float64) * 6.0 + 40.0  # far from the origin, as cells are
    z = x[torch.randperm(n, generator=gen)[:m]] + 0.1 * torch.randn(m, 3, generator=gen, dtype=torch.float64)
    gamma = torch.tensor([0.8, 0.6, 0.7], dtype=torch.float64)
    mean = 1e4 * torch.randn(m, generator=gen, dtype=torch.float64)
    deviations = (1e4 * torch.randn(m, s, generator=gen, dtype=torch.float64)).float()
    exact = rbf_apply(x, z, gamma, mean[:, None] + deviations.double())
    mean_part, deviation_part = rbf_apply_mixed(x, z, gamma, mean, deviations)
    assert mean_part.dtype == torch.float64
    assert deviation_part.dtype == torch.float32
    mixed = deviation_part + mean_part.float()[:, None]
    e = rbf_apply(x, z, gamma, torch.eye(m, dtype=torch.float64))  # E itself
    u32, u64 = 2.0**-24, 2.0**-53
    bound = (m + 2) * u32 * (e @ deviations.double().abs()) + (m + 2) * u64 * (e @ mean.abs())[:, None]
    bound += u32 * (exact.abs() + mean_part.abs()[:, None])  # the mean rounded to float32, and the sum
    assert bool(((mixed.double() - exact).abs() <= bound).all())
