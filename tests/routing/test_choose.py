"""Stage 2 choosing among stage-1 restarts: the context information against brute force, the choice, fit's kept
restarts on disk, and route_predict on the chosen restart."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from bayesmicro.errors import BadInput
from bayesmicro.infer.api import fit
from bayesmicro.infer.results.mixture import Fit, FitConfig
from bayesmicro.routing import choose_restart, context_information, route_predict
from tests.common import assert_close
from tests.routing.test_routing import _reversed_population


def _context_router(heads: torch.Tensor, context_dim: int, sharpness: float, seed: int = 0) -> Fit:
    """A context-routed run whose router's output is ``sharpness`` · (code of the first context column) — it
    separates the reversed population's groups for sharpness ≫ 1 and not at all for 0."""
    torch.manual_seed(seed)
    config = FitConfig(k=2, router="context", dim=heads.shape[-1], router_dim=3 + context_dim, hidden=4)
    state = {key: torch.zeros_like(value) for key, value in config.build_model().router.state_dict().items()}
    state["input_scale"].fill_(1.0)  # the identity standardisation
    state["net.0.weight"][0, 3], state["net.0.weight"][1, 3] = 1.0, -1.0  # hidden units ReLU(±first context column)
    state["net.2.weight"][0, 0] = state["net.2.weight"][1, 1] = sharpness
    return Fit(config, heads[None], state)


def _brute_force_information(weights: np.ndarray, labels: np.ndarray) -> float:
    joint, n = defaultdict(float), len(labels)
    for w, c in zip(weights, labels):
        for k, value in enumerate(w):
            joint[c, k] += value / n
    p_c = {c: sum(v for (c2, _), v in joint.items() if c2 == c) for c in set(labels.tolist())}
    p_k = {k: sum(v for (_, k2), v in joint.items() if k2 == k) for k in range(weights.shape[1])}
    return sum(v * math.log(v / (p_c[c] * p_k[k])) for (c, k), v in joint.items() if v > 0)


@pytest.mark.parametrize("sharpness", [0.0, 0.5, 3.0, 40.0], ids=["constant", "mild", "sharp", "hard"])
def test_context_information_equals_brute_force_and_grows_with_separation(sharpness):
    data, heads, _ = _reversed_population(n=200)
    run = _context_router(heads, 3, sharpness)
    weights = run.log_weights(data).double().exp().numpy()
    assert context_information(run, data) == pytest.approx(_brute_force_information(weights, data.group), abs=1e-12)
    if sharpness == 0.0:
        assert context_information(run, data) == pytest.approx(0.0, abs=1e-7)  # float32 weights
    if sharpness == 40.0:  # the router names each pair's group: I = H(C) = log 2 for two equal groups
        assert context_information(run, data) == pytest.approx(math.log(2), abs=1e-3)


def test_choose_restart_keeps_the_router_that_separates_the_contexts():
    data, heads, _ = _reversed_population(n=400)
    train, test = data.part("train"), data.part("test")
    # a mode whose heads did not split along the groups, and whose router then has nothing to separate
    blind, seeing = _context_router(heads[[0, 0]], 3, 0.0), _context_router(heads, 3, 5.0)
    kept = Fit(blind.config, blind.heads, blind.router_state, restart_modes=[blind, seeing, blind])
    labelled = train.subset(np.arange(40))
    chosen, record = choose_restart(kept, labelled)
    assert chosen is seeing and record["chosen"] == 1 and record["rule"] == "context"
    assert record["context_information"][1] > 0.3 and record["context_information"][0] == pytest.approx(0, abs=1e-7)
    assert choose_restart(kept, labelled, rule="kept")[0] is kept
    for method in ("hyre", "posterior"):  # routing the chosen restart is routing that run
        routed = route_predict(kept, labelled, test, method, restart="context")
        assert torch.equal(routed, route_predict(seeing, labelled, test, method))
    accuracy = lambda p: float((p > 0.5).float().mean())  # noqa: E731
    assert accuracy(route_predict(kept, labelled, test, "hyre", restart="context")) > \
        accuracy(route_predict(kept, labelled, test, "hyre")) + 0.3  # one group's preferences reversed: ~½ right


@pytest.mark.parametrize("run, rule, fragment", [
    ("plain", "context", "needs the run's restarts: fit with keep_restarts=True"),
    ("plain", "best", "restart rule must be one of ('kept', 'context'), got 'best'"),
    ("static", "context", "needs a routed mixture (k ≥ 2 and a router that reads its input)"),
], ids=["no-restarts-kept", "unknown-rule", "static-router"])
def test_choose_restart_refuses_what_it_cannot_choose(run, rule, fragment):
    data, heads, _ = _reversed_population(n=60)
    seeing = _context_router(heads, 3, 5.0)
    if run == "static":
        config = FitConfig(k=2, router="none", dim=heads.shape[-1], router_dim=0)
        state = config.build_model().router.state_dict()
        seeing = Fit(config, heads[None], state, restart_modes=[Fit(config, heads[None], state)])
    with pytest.raises(BadInput, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        choose_restart(seeing, data, rule=rule)


def test_fit_keeps_every_restart_and_a_saved_run_brings_them_back(tmp_path):
    data, _, _ = _reversed_population(n=300)
    run = fit(data, k=2, router="context", restarts=3, hidden=8, keep_restarts=True, seed=1)
    assert len(run.restart_modes) == 3 and all(mode.n_draws == 1 for mode in run.restart_modes)
    records = run.summary["restarts"]
    assert [mode.summary for mode in run.restart_modes] == records
    best = max(range(3), key=lambda r: records[r]["train_loglik"])
    assert torch.equal(run.restart_modes[best].heads, run.heads)  # the kept restart is one of them
    again = Fit.load(run.save(tmp_path / "run"))
    assert sorted(p.name for p in (tmp_path / "run" / "restarts").iterdir()) == ["0", "1", "2"]
    for mode, loaded in zip(run.restart_modes, again.restart_modes):
        assert torch.equal(mode.heads, loaded.heads) and loaded.config == run.config
        assert_close(mode.log_weights(data), loaded.log_weights(data), atol=0)
    assert fit(data, k=2, router="context", restarts=2, hidden=8).restart_modes == []


def test_a_restart_folder_of_other_settings_is_refused_on_load(tmp_path):
    data, heads, _ = _reversed_population(n=60)
    seeing = _context_router(heads, 3, 5.0)
    other = _context_router(heads[:, :3].contiguous(), 3, 5.0)
    Fit(seeing.config, seeing.heads, seeing.router_state, restart_modes=[seeing, other]).save(tmp_path / "run")
    with pytest.raises(BadInput, match="'restarts/1' is not a one-draw run of this run's settings"):
        Fit.load(tmp_path / "run")


def test_a_restarts_folder_with_something_else_in_it_is_refused_on_load(tmp_path):
    _, heads, _ = _reversed_population(n=60)
    seeing = _context_router(heads, 3, 5.0)
    Fit(seeing.config, seeing.heads, seeing.router_state, restart_modes=[seeing]).save(tmp_path / "run")
    (tmp_path / "run" / "restarts" / "notes").mkdir()
    with pytest.raises(BadInput, match=r"'restarts/' holds \['0', 'notes'\], expected the folders 0 … 1"):
        Fit.load(tmp_path / "run")
