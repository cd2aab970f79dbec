"""dustgp.linalg: the jittered Cholesky factorisation and batched eigendecompositions."""

import pytest
import torch
from linear_operator.utils.warnings import NumericalWarning

from dustgp.linalg import batched_eigh, psd_cholesky


def test_batched_eigh_matches_eigh_and_restores_the_thread_count() -> None:
    gen = torch.Generator().manual_seed(0)
    roots = torch.randn(50, 6, 6, generator=gen, dtype=torch.float64)
    blocks = roots @ roots.transpose(1, 2)
    threads = torch.get_num_threads()
    values, vectors = batched_eigh(blocks)
    assert torch.get_num_threads() == threads
    torch.testing.assert_close(vectors @ torch.diag_embed(values) @ vectors.transpose(1, 2), blocks)


def test_psd_cholesky_adds_jitter_only_when_it_must() -> None:
    gen = torch.Generator().manual_seed(1)
    root = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    spd = root @ root.T + torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(psd_cholesky(spd, 1e-6), torch.linalg.cholesky(spd), rtol=0, atol=0)
    singular = torch.ones(4, 4, dtype=torch.float64)  # rank one: plain Cholesky fails
    with pytest.raises(torch.linalg.LinAlgError):
        torch.linalg.cholesky(singular)
    with pytest.warns(NumericalWarning, match="added jitter"):
        factor = psd_cholesky(singular, 1e-6)
    # the factor is that of the matrix plus at most 1e-3 (four tries: 1e-6, 1e-5, 1e-4, 1e-3) on the diagonal
    gap = (factor @ factor.T - singular).diagonal()
    assert torch.all(gap > 0)
    assert torch.all(gap <= 1e-3 * (1 + 1e-9))
