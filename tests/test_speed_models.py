"""small-cnn's fast max-pool: the same values and gradients as ``nn.MaxPool2d(2)``, bit for bit."""

import pytest
import torch
from oebench_plugins.models import max_pool_2x2, small_cnn
from torch import nn


def _tied(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """ReLU-like values on a coarse grid: most 2 x 2 windows hold ties (zeros or equal maxima)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 3, shape, generator=g).clamp(min=0).float() / 2


@pytest.mark.parametrize("shape", [(8, 4, 28, 28), (3, 2, 7, 9), (5, 16, 14, 14)])
def test_values_and_gradients_match_max_pool_on_ties_and_odd_sides(shape):
    x = _tied(shape, seed=sum(shape))
    grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2)
    ref_in, fast_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref, fast = nn.MaxPool2d(2)(ref_in), max_pool_2x2()(fast_in)
    ref.backward(grad)
    fast.backward(grad)
    assert fast.is_contiguous() and fast_in.grad.is_contiguous()
    assert torch.equal(ref, fast)
    # each window's gradient goes to its first maximum, as in max_pool2d, not split over ties
    assert torch.equal(ref_in.grad, fast_in.grad)
    assert (fast_in.grad != 0).sum() == (grad != 0).sum()
    with torch.no_grad():
        assert torch.equal(max_pool_2x2()(x), ref.detach())


def test_training_with_it_gives_the_weights_of_max_pool():
    def trained(fast: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = small_cnn(10, (1, 16, 16), width=4)
        if not fast:
            for i, layer in enumerate(model.body):
                if type(layer).__name__ == "MaxPool2x2":
                    model.body[i] = nn.MaxPool2d(2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        for step in range(6):
            x, y = _tied((32, 1, 16, 16), seed=step), torch.arange(32) % 10
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return model.state_dict()

    fast, ref = trained(True), trained(False)
    assert all(torch.equal(fast[k], ref[k]) for k in ref)
    # the control: the weights did move, so equal weights are not equal starting points
    torch.manual_seed(0)
    start = small_cnn(10, (1, 16, 16), width=4).state_dict()
    assert not torch.equal(start["fc.weight"], fast["fc.weight"])
