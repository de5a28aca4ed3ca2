"""Routers on a label (``router="user"`` / ``"group"``): each user's (group's) own weights from the one-hot of its
label, coded by the training labels and kept in the run; recovery where the prompt says nothing, new labels, errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from bayesmicro.errors import BadInput
from bayesmicro.evaluate.alignment import cosine_matrix, match_heads
from bayesmicro.infer.api import fit
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.integrations.export import mixture_weights
from bayesmicro.routing.common import context_router_from
from tests.common import assert_close
from tests.routing.test_routing import _reversed_population


def _accuracy(proba: torch.Tensor) -> float:
    return float((proba > 0.5).double().mean())


@pytest.fixture(scope="module")
def reversed_groups():
    """Two groups with reversed heads w, −w; noise prompts, so only the group label says which head applies."""
    data, heads, true_prob = _reversed_population(n=600)
    oracle = _accuracy(true_prob[data.split == "test"])
    return replace(data, context=None), heads, oracle


@pytest.fixture(scope="module")
def group_fit(reversed_groups):
    data, _, _ = reversed_groups
    return fit(data, k=2, router="group", restarts=1)


def test_a_group_router_recovers_heads_a_prompt_router_cannot(reversed_groups, group_fit):
    data, heads, oracle = reversed_groups
    test = data.part("test")
    prompt_fit = fit(data, k=2, router="prompt", restarts=1)
    assert _accuracy(prompt_fit.predict_proba(test)) < oracle - 0.2
    assert _accuracy(group_fit.predict_proba(test)) > oracle - 0.03
    fitted = group_fit.heads.mean(0)
    cosine = cosine_matrix(fitted[match_heads(fitted, heads)], heads).diagonal()
    assert bool((cosine > 0.95).all()), cosine
    assert group_fit.config.router_levels == ("g0", "g1") and group_fit.config.router_dim == 2
    assert group_fit.config.alpha == 0.0  # the default for label routers (0.5 would hold both groups at uniform)


def test_labels_are_coded_by_name_and_a_new_label_reads_zeros(reversed_groups, group_fit):
    data, _, _ = reversed_groups
    test = data.part("test")
    g1 = test.subset(np.flatnonzero(test.group == "g1"))
    assert_close(group_fit.log_weights(g1), group_fit.log_weights(test)[test.group == "g1"])
    unseen = replace(test, group=np.full(len(test), "g_new"))
    router = group_fit._router
    with torch.no_grad():
        zero_row = router.log_weights(torch.zeros(1, 2), 1)
    assert_close(group_fit.log_weights(unseen), zero_row.expand(len(test), 2))


def test_saved_run_keeps_the_coding_and_predicts_the_same(reversed_groups, group_fit, tmp_path):
    data, _, _ = reversed_groups
    test = data.part("test")
    loaded = Fit.load(group_fit.save(tmp_path / "run"))
    assert loaded.config == group_fit.config
    assert_close(loaded.predict_proba(test), group_fit.predict_proba(test))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["router"] == "group" and config["router_levels"] == ["g0", "g1"]


@pytest.mark.parametrize("levels, fragment", [
    (["g0"], "router_levels"), ([0, 1], "router_levels"), (None, "router_levels"),
], ids=["too_few", "not_names", "missing"])
def test_a_tampered_coding_is_bad_input(group_fit, tmp_path, levels, fragment):
    group_fit.save(tmp_path / "run")
    path = tmp_path / "run" / "config.json"
    config = json.loads(path.read_text())
    config["router_levels"] = levels
    path.write_text(json.dumps(config))
    with pytest.raises(BadInput, match=fragment):
        Fit.load(tmp_path / "run")


def test_pairs_without_the_label_are_bad_input(reversed_groups, group_fit):
    data, _, _ = reversed_groups
    unlabelled = replace(data, group=None)
    with pytest.raises(BadInput, match="router 'group' reads each pair's 'group' label"):
        fit(unlabelled, k=2, router="group")
    with pytest.raises(BadInput, match="routes on each pair's 'group' label"):
        group_fit.predict_proba(unlabelled)


def test_stage_two_and_export_start_from_the_label_routers_weights(reversed_groups, group_fit):
    data, _, _ = reversed_groups
    test = data.part("test")
    given = group_fit.with_label_context(test)  # route's stage-2 context: the run's one-hot
    assert_close(given.context, torch.nn.functional.one_hot(torch.from_numpy((test.group == "g1").astype(int)), 2)
                 .float())
    with torch.no_grad():
        started = context_router_from(group_fit, given).log_weights(given.router_input(True), len(given))
    assert_close(started, group_fit.log_weights(test), atol=1e-5)
    first_g1 = int(np.flatnonzero(test.group == "g1")[0])
    assert_close(mixture_weights(group_fit, None, "g1"), group_fit.log_weights(test)[first_g1].exp())
    with pytest.raises(BadInput, match="not one of the 2 group labels"):
        mixture_weights(group_fit, None, "g7")
