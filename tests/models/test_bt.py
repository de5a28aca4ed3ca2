import itertools

import pytest
import torch

from bayesmicro.models.bt import (bt_log_prob, entropy, mixture_log_prob, mixture_prob, responsibilities,
                                  reward_margins)
from tests.common import assert_close


def _random(n=7, k=3, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    heads = torch.randn(k, d, generator=g, dtype=torch.float64)
    diff = torch.randn(n, d, generator=g, dtype=torch.float64)
    log_w = torch.log_softmax(torch.randn(n, k, generator=g, dtype=torch.float64), -1)
    return heads, diff, log_w


def test_margins_are_head_dot_feature_difference():
    heads, diff, _ = _random()
    expected = torch.tensor([[float(heads[k] @ diff[i]) for k in range(3)] for i in range(7)], dtype=torch.float64)
    assert_close(reward_margins(heads, diff), expected, atol=1e-12)


def test_margins_broadcast_over_draws():
    heads, diff, _ = _random()
    draws = torch.stack([heads, 2 * heads])
    out = reward_margins(draws, diff)
    assert out.shape == (2, 7, 3)
    assert_close(out[1], 2 * reward_margins(heads, diff), atol=1e-12)


def test_mixture_log_prob_matches_brute_force_sum():
    heads, diff, log_w = _random()
    margins = reward_margins(heads, diff)
    brute = torch.stack([
        sum(log_w[i, k].exp() / (1 + torch.exp(-margins[i, k])) for k in range(3)) for i in range(7)
    ]).log()
    assert_close(mixture_log_prob(log_w, margins), brute, atol=1e-12)
    assert_close(mixture_prob(log_w, margins), brute.exp(), atol=1e-12)


def test_likelihood_of_independent_pairs_matches_enumeration_over_assignments():
    # Σ_i log Σ_k π σ(Δ) equals log of the sum over all K^n joint component assignments.
    heads, diff, log_w = _random(n=4, k=3)
    margins = reward_margins(heads, diff)
    total = 0.0
    for z in itertools.product(range(3), repeat=4):
        total += float(torch.stack([log_w[i, z[i]] + bt_log_prob(margins[i, z[i]]) for i in range(4)]).sum().exp())
    assert_close(mixture_log_prob(log_w, margins).sum(), torch.tensor(total).log(), atol=1e-10)


def test_responsibilities_are_bayes_rule():
    heads, diff, log_w = _random()
    margins = reward_margins(heads, diff)
    joint = log_w.exp() * torch.sigmoid(margins)
    assert_close(responsibilities(log_w, margins), joint / joint.sum(-1, keepdim=True), atol=1e-12)


def test_gradient_matches_finite_differences():
    heads, diff, log_w = _random()
    heads.requires_grad_(True)
    f = lambda h: mixture_log_prob(log_w, reward_margins(h, diff)).sum()  # noqa: E731
    assert torch.autograd.gradcheck(f, (heads,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("scale", [1e4, -1e4], ids=["plus_1e4", "minus_1e4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_extreme_margins_stay_finite(scale, dtype):
    margins = torch.full((5, 3), scale, dtype=dtype)
    log_w = torch.log_softmax(torch.randn(5, 3), -1).to(dtype)
    log_w[0] = torch.tensor([0.0, -float("inf"), -float("inf")], dtype=dtype)  # all weight on one head
    out = mixture_log_prob(log_w, margins)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all() and (out <= 0).all()
    expected = 0.0 if scale > 0 else -1e4
    tol = 1e-3 if dtype == torch.float32 else 1e-2  # 1e4 itself rounds in fp16/bf16
    assert_close(out, torch.full((5,), expected), atol=tol, rtol=tol)
    resp = responsibilities(log_w, margins)
    assert torch.isfinite(resp).all()
    assert_close(resp.sum(-1), torch.ones(5), atol=1e-5)


def test_entropy_of_uniform_is_log_k():
    log_w = torch.log(torch.full((2, 4), 0.25))
    assert_close(entropy(log_w), torch.full((2,), torch.log(torch.tensor(4.0)).item()), atol=1e-6)
