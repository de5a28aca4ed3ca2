"""Pooling of last-layer hidden states into one vector per sequence."""

from __future__ import annotations

import torch

from bayesmicro.errors import BadInput
from bayesmicro.methods import Pooling

POOLINGS = tuple(member.value for member in Pooling)


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise BadInput(f"--pooling must be one of {list(POOLINGS)}, got {pooling!r}")
    return pooling


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(b, L) 0/1 mask → (b,) index of each row's last real (non-pad) token, for either padding side."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(dim=1)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(b, L, d) hidden states and (b, L) mask → (b, d) float32: ``last`` non-pad token or ``mean`` over tokens."""
    if pooling not in POOLERS:
        raise BadInput(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
    return POOLERS[Pooling(pooling)](hidden, attention_mask)


def pool_last(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The hidden state of each row's last non-pad token."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, last_token_index(attention_mask)].float()


def pool_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean hidden state over each row's non-pad tokens."""
    mask = attention_mask.to(torch.float32).unsqueeze(-1)
    return (hidden.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


POOLERS = {Pooling.LAST: pool_last, Pooling.MEAN: pool_mean}  # the registry: Pooling → function
