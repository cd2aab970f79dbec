"""Small dense linear algebra shared by the model, the fit and the prediction: a Cholesky factorisation that adds
jitter when it must, and eigendecompositions of many small blocks.
"""

from __future__ import annotations

import torch
from linear_operator.utils.cholesky import psd_safe_cholesky

__all__ = ["batched_eigh", "psd_cholesky"]


def psd_cholesky(matrix: torch.Tensor, jitter: float) -> torch.Tensor:
    """Lower Cholesky factor of a positive semi-definite ``matrix``, shape (M, M).

    Should the factorisation fail, it is retried with ``jitter`` added to the diagonal, then 10×, 100×, ... more
    (four tries in all; GPyTorch's ``psd_safe_cholesky``), and ``torch.linalg.LinAlgError`` is raised after that.
    ``jitter`` is in the units of ``matrix``.
    """
    return psd_safe_cholesky(matrix, jitter=jitter, max_tries=4)


def batched_eigh(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` over a batch of small matrices, on one thread.

    On the CPU, torch's threaded batched eigh is far slower on many small blocks than one thread (docs: Design
    notes, "Batched eigh"). The caller's thread count is restored after.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(blocks)
    finally:
        torch.set_num_threads(threads)
