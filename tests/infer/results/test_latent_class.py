"""LatentClassResult: save → load round trip, predictions on new rows, class posteriors, damaged folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import bayesmicro
from bayesmicro.cli.app import app
from bayesmicro.data.protocols.comparisons import comparisons_from_columns
from bayesmicro.errors import BadInput
from bayesmicro.infer.latent_class import fit_latent_class
from bayesmicro.infer.results.latent_class import LatentClassResult
from tests.common import SHARED_DATA, assert_close

ITEMS = ["a", "b", "c", "d"]


def _table(n_users=30, per_user=12, seed=0) -> dict[str, list]:
    """Two classes with reversed item orders; the text covariate 'lang' decides the class, 'age' is noise."""
    rng = np.random.default_rng(seed)
    worth = np.array([1.5, 0.5, -0.5, -1.5])
    cols = {"subject": [], "item1": [], "item2": [], "outcome": [], "lang": [], "age": []}
    for u in range(n_users):
        sign = 1 if u % 2 else -1
        age = str(int(rng.integers(20, 60)))
        for _ in range(per_user):
            i, j = rng.choice(4, 2, replace=False)
            p = 1 / (1 + np.exp(-sign * (worth[i] - worth[j])))
            cols["subject"].append(f"s{u}")
            cols["item1"].append(ITEMS[i])
            cols["item2"].append(ITEMS[j])
            cols["outcome"].append(int(rng.choice([1, -1, 0], p=[0.9 * p, 0.9 * (1 - p), 0.1])))
            cols["lang"].append("it" if u % 2 else "en")
            cols["age"].append(age)
    return cols


@pytest.fixture(scope="module")
def result() -> LatentClassResult:
    cols = _table()
    pairs = comparisons_from_columns(cols, context_cols=["lang", "age"])
    return LatentClassResult.from_fit(fit_latent_class(pairs, 2, restarts=2, seed=0), pairs.meta)


def test_round_trip_gives_identical_predictions_and_loglik(result, tmp_path):
    cols = _table()
    loaded = bayesmicro.load(result.save(tmp_path / "run"))
    assert isinstance(loaded, LatentClassResult)
    assert loaded.items == result.items and sorted(loaded.items) == ITEMS
    assert loaded.users.tolist() == result.users.tolist()
    assert torch.equal(loaded.predict_proba(cols), result.predict_proba(cols))
    assert loaded.log_lik(cols) == result.log_lik(cols)
    assert torch.equal(loaded.class_posteriors(cols)[1], result.class_posteriors(cols)[1])
    assert torch.equal(loaded.worths(), result.worths()) and loaded.summary["method"] == "em"
    # the training table's marginal log-likelihood is the fit's maximised loglik
    assert abs(result.log_lik(cols) - result.loglik) < 1e-6


def test_predictions_follow_the_class_and_are_symmetric(result):
    new = {"subject": ["s1", "s0", "new_it", "new_en"], "item1": ["a"] * 4, "item2": ["d"] * 4,
           "outcome": [0] * 4, "lang": ["it", "en", "it", "en"], "age": ["30"] * 4}
    prob = result.predict_proba(new)
    assert prob[0] > 0.8 and prob[1] < 0.2  # seen users: their own class
    assert prob[2] > 0.8 and prob[3] < 0.2  # unseen users: the router reads 'lang'
    swapped = {**new, "item1": new["item2"], "item2": new["item1"]}
    assert_close(prob + result.predict_proba(swapped), torch.ones(4), atol=1e-12)


def test_class_posteriors_of_new_rows_match_bayes_rule(result):
    rows = {"subject": ["x", "x", "y"], "item1": ["a", "b", "c"], "item2": ["d", "c", "a"], "outcome": [1, 1, 0],
            "lang": ["en", "en", "it"], "age": ["40", "40", "25"]}
    users, post = result.class_posteriors(rows)
    assert users.tolist() == ["x", "y"]
    prior = result.prior_weights(result.rows(rows).covariates)
    w = dict(zip(result.items, result.worths().T))  # item → (K,) worths
    lik = torch.sigmoid(w["a"] - w["d"]) * torch.sigmoid(w["b"] - w["c"])  # (K,) x's two wins
    assert_close(post[0], prior[0] * lik / (prior[0] * lik).sum(), atol=1e-12)
    assert_close(post[1], prior[2], atol=1e-12)  # y has only a tie: the prior


def test_unknown_item_or_level_names_the_row(result):
    base = {"subject": ["s1", "s2"], "item1": ["a", "zz"], "item2": ["b", "a"], "outcome": [1, 1],
            "lang": ["en", "en"], "age": ["30", "30"]}
    with pytest.raises(BadInput, match="row 1: 'item1' is 'zz', an item the run never saw"):
        result.predict_proba(base)
    with pytest.raises(BadInput, match="row 0: covariate 'lang' is 'fr', a level the run never saw"):
        result.predict_proba({**base, "item1": ["a", "b"], "lang": ["fr", "en"]})
    with pytest.raises(BadInput, match="row 1: covariate 'age' is 'old', expected a number"):
        result.predict_proba({**base, "item1": ["a", "b"], "age": ["30", "old"]})
    with pytest.raises(BadInput, match=r"missing column\(s\) \['lang'\]"):
        result.predict_proba({k: v for k, v in base.items() if k != "lang"})


@pytest.mark.parametrize("damage", ["missing_users", "truncated_params", "bad_dim", "bad_router", "not_json"])
def test_damaged_run_folder_is_a_one_line_bad_input(result, tmp_path, damage):
    run = result.save(tmp_path / "run")
    if damage == "missing_users":
        (run / "users.json").unlink()
    elif damage == "truncated_params":
        data = (run / "params.safetensors").read_bytes()
        (run / "params.safetensors").write_bytes(data[: len(data) // 2])
    elif damage in ("bad_dim", "bad_router"):
        config = json.loads((run / "config.json").read_text())
        config.update({"dim": 7} if damage == "bad_dim" else {"covariate_dim": 5, "covariate_spec": [
            {"column": "z", "kind": "text", "levels": list("abcdef")}]})
        (run / "config.json").write_text(json.dumps(config))
    else:
        (run / "summary.json").write_text("{not json")
    with pytest.raises(BadInput) as info:
        bayesmicro.load(run)
    assert len(str(info.value).splitlines()) == 1 and str(run) in str(info.value)


def test_fit_cli_run_on_cems_loads_back(tmp_path):
    cems = SHARED_DATA / "cems_choice.csv.gz"
    out = CliRunner().invoke(app, ["fit-comparisons", str(cems), "--latent", "user", "--k", "2",
                                   "--context-cols", "english,italian", "--restarts", "1", "--out",
                                   str(tmp_path / "run"), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout.strip().splitlines()[-1])
    loaded = bayesmicro.load(tmp_path / "run")
    assert loaded.log_lik(cems) == pytest.approx(report["loglik"], abs=1e-9)
    assert loaded.predict_proba(cems).shape == (4454,)  # every row, ties included
    assert_close(loaded.class_sizes().sum(), torch.tensor(301.0), atol=1e-9)
    assert repr(loaded) == (f"LatentClassResult(k=2, items=6, users=301, pairs={report['n']}, "
                            f"loglik={report['loglik']:.2f})")
    again = bayesmicro.load(loaded.save(tmp_path / "copy"))
    assert torch.equal(again.predict_proba(cems), loaded.predict_proba(cems))
    scored = CliRunner().invoke(app, ["eval", str(tmp_path / "run"), str(cems)])  # a command for reward-head runs
    assert scored.exit_code == 2 and "a per-user latent-class run" in scored.stderr


def test_old_latent_class_folder_and_missing_folder(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.json").write_text("{}")
    with pytest.raises(BadInput, match="no 'config.json': a latent-class run written before"):
        bayesmicro.load(tmp_path / "old")
    with pytest.raises(BadInput, match="not a run folder"):
        bayesmicro.load(tmp_path / "absent")


def test_load_still_returns_a_fit_for_mixture_runs(tmp_path):
    from bayesmicro.infer.results.mixture import Fit, FitConfig

    config = FitConfig(k=2, router="none", dim=3)
    fit = Fit(config, torch.randn(1, 2, 3), config.build_model().router.state_dict())
    assert isinstance(bayesmicro.load(fit.save(tmp_path / "run")), Fit)
