"""Capacity chosen on training pairs: validation units, K by validation elpd, converged fits from single BT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayesmicro.data import PopulationSpec, make_population
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.api import fit
from bayesmicro.infer.capacity import CapacityGrid, comparison_keys, validation_rows
from bayesmicro.models.mixture import BTMixture

FAST = CapacityGrid(ks=(1, 2, 3), prior_scales=(1.0,), router_prior_scales=(0.3,), alphas=(0.0,))


def repeated_comparisons(n_items: int = 30, judges: int = 4, seed: int = 0) -> EmbeddedPairs:
    """Each comparison judged ``judges`` times, in either order."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n_items, 3, generator=g), torch.randn(n_items, 3, generator=g)
    flip = torch.rand(n_items * judges, generator=g) < 0.5
    a, b = a.repeat(judges, 1), b.repeat(judges, 1)
    return EmbeddedPairs(chosen=torch.where(flip[:, None], b, a), rejected=torch.where(flip[:, None], a, b),
                         prompt=torch.zeros(n_items * judges, 1),
                         group=np.array([f"t{i % 5}" for i in range(n_items)] * judges))


def test_comparison_keys_join_a_comparison_in_either_order():
    pairs = repeated_comparisons()
    keys = comparison_keys(pairs.diff())
    assert np.unique(keys).size == 30
    assert (keys.reshape(4, 30) == keys[:30]).all()


@pytest.mark.parametrize("by", ["pair", "group"])
def test_validation_never_splits_a_unit(by):
    pairs = repeated_comparisons()
    held = validation_rows(pairs, 0.3, seed=1, validate_by=by)
    mask = np.zeros(len(pairs), bool)
    mask[held] = True
    units = comparison_keys(pairs.diff()) if by == "pair" else pairs.group
    assert not set(units[mask].tolist()) & set(units[~mask].tolist())
    assert 0 < mask.sum() < len(pairs)


def test_validation_by_a_missing_label_is_refused():
    with pytest.raises(BadInput, match="validate_by='user' needs a 'user' label"):
        validation_rows(repeated_comparisons(), 0.2, 0, "user")


@pytest.mark.parametrize("spec, expected", [
    (PopulationSpec(n_pairs=1500, k=1), {1}),
    (PopulationSpec(n_pairs=3000), {2, 3}),
], ids=["one-head", "three-heads"])
def test_auto_keeps_one_head_unless_heads_earn_their_keep(spec, expected):
    data, _ = make_population(spec, seed=0)
    result = fit(data, router="context", capacity=FAST)
    report = result.summary["capacity"]
    assert result.config.k in expected, report["table"]
    assert report["chosen"]["k"] == result.config.k and report["validation_pairs"] > 0


def test_mixture_starts_from_single_bt_and_converges():
    data, _ = make_population(PopulationSpec(n_pairs=2000), seed=1)
    result = fit(data, k=3, router="context", alpha=0.0, restarts=1)
    summary = result.summary
    assert summary["converged"] and summary["iterations"] > 0
    assert summary["train_loglik"] > summary["single_bt"]["train_loglik"]


def test_an_unknown_k_word_is_refused():
    data, _ = make_population(PopulationSpec(n_pairs=200), seed=0)
    with pytest.raises(BadInput, match="k must be an integer ≥ 1 or 'auto', got 'many'"):
        fit(data, k="many")


@pytest.mark.parametrize("grid, message", [
    (dict(ks=(0, 1)), "ks must be integers ≥ 1"),
    (dict(alphas=(float("nan"),)), "alphas must be finite numbers ≥ 0"),
    (dict(validate_by="topic"), "validate_by must be one of"),
    (dict(validation_fraction=1.0), "validation_fraction must be in"),
], ids=["k0", "alpha-nan", "validate-by", "fraction"])
def test_bad_grids_are_refused(grid, message):
    with pytest.raises(BadInput, match=message):
        CapacityGrid(**grid)


def test_candidates_use_the_optimizer_the_final_fit_resolves_to(monkeypatch):
    """A training set just over the full-batch limit whose fitting part is under it: every candidate fits with
    AdamW like the final fit (choosing K with converged L-BFGS fits, then refitting by capped AdamW, would not be
    the setting that was validated)."""
    import bayesmicro.infer.map as map_module

    data, _ = make_population(PopulationSpec(n_pairs=600), seed=0)
    train = data.part("train")
    prompts = train.router_input(False)
    assert torch.unique(prompts, dim=0).shape[0] == len(train)  # every pair its own router row: cost ∝ pairs
    largest = BTMixture(data.dim, max(FAST.ks), "prompt", prompts.shape[1])
    full = map_module.full_batch_cost(largest, train.diff(), prompts)  # distinct prompts: rows = prompts
    monkeypatch.setattr(map_module, "FULL_BATCH_LIMIT", int(0.9 * full))  # the fitting part (80 %) is under it
    used = []
    original = map_module._fit_map_scaled
    monkeypatch.setattr(map_module, "_fit_map_scaled",
                        lambda *args: used.append(args[5]) or original(*args))
    quick = map_module.Schedule(epochs=2)
    result = fit(data, router="prompt", capacity=FAST, restarts=1, schedule=quick)
    assert len(used) > 3 and set(used) == {"adam"}, used
    assert [r["optimizer"] for r in result.summary["restarts"]] == ["adam"]
