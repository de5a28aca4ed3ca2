"""Inference methods as types: the registry maps every Inference member to its fitter class."""

from __future__ import annotations

import torch

from bayesmicro.infer.api import INFERENCE_METHODS, fit
from bayesmicro.infer.fitter import Fitter, MAPFitter, StreamedFitter
from bayesmicro.infer.registry import FITTERS, fitter_for
from bayesmicro.methods import Inference
from tests.common import small_pairs


def test_every_inference_member_has_a_fitter():
    assert set(FITTERS) == set(Inference) and INFERENCE_METHODS == tuple(Inference)
    for member, cls in FITTERS.items():
        assert issubclass(cls, Fitter) and cls.inference == member
        assert isinstance(fitter_for(member.value), cls)
    assert issubclass(StreamedFitter, Fitter)


def test_fitter_fit_is_api_fit_with_its_method():
    data = small_pairs(n=60)
    direct = fit(data, k=2, router="prompt", restarts=1, seed=3)
    by_class = MAPFitter().fit(data, direct.config, restarts=1)
    assert torch.equal(direct.heads, by_class.heads)
