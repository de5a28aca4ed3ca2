"""Determinism on CPU: the same seed gives bit-identical numbers, through the API and through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bayesmicro as bm
from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.infer.map import Schedule
from tests.cli.helpers import run_cli


@pytest.fixture(scope="module")
def population():
    data, _ = make_population(PopulationSpec(n_pairs=500, dim=6, prompt_dim=4, context_dim=3), seed=1)
    return data


def _identical(a: bm.Fit, b: bm.Fit) -> bool:
    return (torch.equal(a.heads, b.heads) and a.router_state.keys() == b.router_state.keys()
            and all(torch.equal(a.router_state[k], b.router_state[k]) for k in a.router_state)
            and a.summary["restarts"] == b.summary["restarts"])


@pytest.mark.parametrize("router, optimizer", [("prompt", "lbfgs"), ("context", "adam"), ("none", "lbfgs")],
                         ids=["prompt_lbfgs", "context_adam_minibatch", "static_lbfgs"])
def test_same_seed_same_numbers(population, router, optimizer):
    schedule = Schedule(optimizer=optimizer, epochs=3, batch_size=64)
    runs = [bm.fit(population, k=3, router=router, restarts=2, seed=seed, schedule=schedule) for seed in (7, 7, 8)]
    assert _identical(runs[0], runs[1])
    test = population.part("test")
    assert torch.equal(runs[0].predict_proba(test), runs[1].predict_proba(test))
    assert not torch.equal(runs[0].heads, runs[2].heads)  # the seed matters, so the equality above is not vacuous


def test_cli_same_seed_same_json_and_same_files(population, tmp_path):
    path = tmp_path / "pairs.npz"
    np.savez(path, chosen=population.chosen.numpy(), rejected=population.rejected.numpy(),
             prompt=population.prompt.numpy(), group=population.group, split=population.split)
    outputs = []
    for name in ("a", "b"):
        result = run_cli("fit", path, "--k", "2", "--seed", "11", "--restarts", "2", "--out", tmp_path / name, "--json",
                         subprocess=True)  # two processes: nothing carried over from one to the other
        assert result.code == 0, result.stderr
        outputs.append({k: v for k, v in result.json().items() if k not in ("seconds", "out")})
    assert outputs[0] == outputs[1]
    assert outputs[0]["routed_mixture"]["n"] == int((population.split == "test").sum())
    assert (tmp_path / "a" / "params.safetensors").read_bytes() == (tmp_path / "b" / "params.safetensors").read_bytes()
