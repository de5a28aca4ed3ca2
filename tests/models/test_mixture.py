import pytest
import torch

from bayesmicro.models.mixture import Router
from tests.common import assert_close


def _standardised_reference(router: Router, x: torch.Tensor) -> torch.Tensor:
    """log π computed the textbook way: standardise x, then the network."""
    return torch.log_softmax(router.net((x.float() - router.input_mean) / router.input_scale), -1)


@pytest.mark.parametrize("offset", [0.0, 1.0, 500.0], ids=["centred", "offset", "large-mean"])
def test_router_folds_its_standardisation_without_changing_the_function_or_gradients(offset):
    torch.manual_seed(0)
    router = Router("prompt", 4, 6, 8)
    x = torch.randn(50, 6) * torch.tensor([3.0, 1.0, 0.1, 2.0, 1.0, 1.0]) + offset
    router.standardize_from(x)
    folded = router.log_weights(x, 50)
    reference = _standardised_reference(router, x)
    assert_close(folded, reference, atol=2e-5 * max(1.0, offset / 10))
    weights = torch.randn(50, 4)
    grads = [torch.autograd.grad((out * weights).sum(), list(router.net.parameters()))
             for out in (router.log_weights(x, 50), _standardised_reference(router, x))]
    for got, want in zip(*grads):
        assert_close(got, want, atol=1e-4 * max(1.0, offset / 10), rtol=1e-4)


def test_router_multiplies_low_precision_input_in_its_own_precision():
    torch.manual_seed(1)
    router = Router("prompt", 4, 6, 8)
    x = torch.randn(50, 6) * 3 + 1
    router.standardize_from(x)
    with torch.no_grad():
        out = router.log_weights(x.bfloat16(), 50)
        assert out.dtype == torch.float32
        assert_close(out, _standardised_reference(router, x), atol=5e-2)


def test_router_ignores_columns_constant_on_the_training_data():
    torch.manual_seed(2)
    router = Router("prompt", 3, 4, 8)
    x = torch.randn(40, 4)
    x[:, 2] = 0.05  # constant: its sd sits at the floor
    x[:, 3] = 300.0 + 1e-4 * torch.randn(40)  # varies only in float32 rounding of its size
    router.standardize_from(x)
    new = torch.randn(10, 4)
    moved = new.clone()
    moved[:, 2:] = torch.tensor([123.0, -7.0])
    with torch.no_grad():
        assert torch.equal(router.log_weights(new, 10), router.log_weights(moved, 10))
        assert torch.equal(router.standardize(moved)[:, 2:], torch.zeros(10, 2))
    first_layer = router.net[0].weight
    (grad,) = torch.autograd.grad((router.log_weights(x, 40) * torch.randn(40, 3)).sum(), first_layer)
    assert torch.equal(grad[:, 2:], torch.zeros(8, 2)) and bool(grad[:, :2].abs().sum() > 0)


@pytest.mark.parametrize("rows", [7, 512, 1300], ids=["one-block", "exact-block", "three-blocks"])
def test_router_standardisation_is_the_float64_mean_and_sd_of_the_training_input(rows):
    torch.manual_seed(3)
    x = torch.randn(rows, 5) * torch.tensor([1.0, 10.0, 0.01, 3.0, 1.0]) + torch.tensor([0.0, 50.0, -2.0, 1e3, 0.0])
    router = Router("prompt", 2, 5, 4)
    router.standardize_from(x)
    sd, mean = torch.std_mean(x.double(), 0)
    assert router.input_mean.dtype == router.input_scale.dtype == torch.float32
    assert_close(router.input_mean.double(), mean, rtol=1e-6, atol=1e-6)
    assert_close(router.input_scale.double(), sd, rtol=1e-5)
