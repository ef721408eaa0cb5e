"""kernels.linear on inputs whose last dim does not fit the weight: the same error as F.linear (the oracle), under
every CPU policy, in inference mode and under no_grad. The fast paths used to fail in a reshape ("shape '[2, 1536]'
is invalid for input of size 1536") or inside oneDNN ("could not create a primitive descriptor"), naming neither
tensor nor what was expected."""
import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import matvec


@pytest.mark.parametrize("policy", sorted(matvec.POLICIES))
@pytest.mark.parametrize("shape", [(2, 288), (4, 288), (1, 1152), (576, 1), (64, 577), (3, 2, 288)])
@pytest.mark.parametrize("mode", ["inference", "no_grad"])
def test_linear_with_a_mismatched_input_raises_what_f_linear_raises(monkeypatch, policy, shape, mode):
    monkeypatch.setattr(matvec, "POLICY", matvec.POLICIES[policy])
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # the split and W @ X.T paths need 2 threads
    g = torch.Generator().manual_seed(0)
    weight, x = torch.randn(1536, 576, generator=g), torch.randn(*shape, generator=g)
    with pytest.raises(RuntimeError) as want:
        F.linear(x, weight)
    context = torch.inference_mode() if mode == "inference" else torch.no_grad()
    with context, pytest.raises(RuntimeError) as got:
        kernels.linear(x, weight)
    assert str(got.value) == str(want.value)
