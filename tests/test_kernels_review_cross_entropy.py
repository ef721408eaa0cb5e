"""fused_linear_cross_entropy's chunk_size: a negative one used to skip every chunk and return a loss of 0 (and zero
gradients) where F.cross_entropy (the oracle) gives the real loss; it is refused now, naming the argument."""
import pytest
import torch
import torch.nn.functional as F

import kernels


def _problem():
    g = torch.Generator().manual_seed(0)
    return torch.randn(10, 8, generator=g), torch.randn(30, 8, generator=g), torch.randint(0, 30, (10,), generator=g)


@pytest.mark.parametrize("chunk_size", [-1, -64, 2.5, "32"])
def test_a_chunk_size_that_is_not_a_row_count_is_refused(chunk_size):
    h, w, t = _problem()
    assert F.cross_entropy(h @ w.T, t) > 0  # the loss a silently skipped loop would have reported as 0
    with kernels.use_backend("torch"), pytest.raises(ValueError, match=r"chunk_size must be a positive number"):
        kernels.fused_linear_cross_entropy(h, w, t, chunk_size=chunk_size)


@pytest.mark.parametrize("chunk_size", [None, 0, 1, 3, 64])
def test_valid_chunk_sizes_match_f_cross_entropy_in_float64(chunk_size):
    h, w, t = _problem()
    hl, wl = h.clone().requires_grad_(), w.clone().requires_grad_()
    with kernels.use_backend("torch"):
        loss = kernels.fused_linear_cross_entropy(hl, wl, t, chunk_size=chunk_size)
    loss.backward()
    h64, w64 = h.double().requires_grad_(), w.double().requires_grad_()
    ref = F.cross_entropy(h64 @ w64.T, t)
    ref.backward()
    torch.testing.assert_close(loss.double(), ref.detach(), atol=5e-5, rtol=1e-4)
    torch.testing.assert_close(hl.grad.double(), h64.grad, atol=5e-5, rtol=1e-4)
    torch.testing.assert_close(wl.grad.double(), w64.grad, atol=5e-5, rtol=1e-4)
