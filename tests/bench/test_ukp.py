"""The ``ukp`` suite on a small judgments table of the same schema, built here; its protocols' bookkeeping."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from bayesmicro.bench import ukp
from bayesmicro.errors import BadInput
from tests.cli.helpers import assert_bad_input, run_cli

TOPICS = ("school-uniform_good", "tv-vs-books_tv", "ban-bottles_yes")


def write_judgments(path, seed: int = 0) -> list[dict]:
    """Three heavy annotators (≥ 100 judgments) and twenty light ones over 3 topics × 8 arguments; each annotator
    prefers longer arguments, two of the heavy ones the opposite (a real disagreement)."""
    rng = np.random.default_rng(seed)
    arguments = {topic: [f"Argument {i} on {topic}: " + "because " * (i + 1) + "it matters." for i in range(8)]
                 for topic in TOPICS}
    users = [(f"H{u}", 110, -1.0 if u else 1.0) for u in range(3)] + [(f"L{u}", 8, 1.0) for u in range(20)]
    rows = []
    for user, n, sign in users:
        for _ in range(n):
            topic = TOPICS[rng.integers(len(TOPICS))]
            i, j = rng.choice(8, 2, replace=False)
            wins_i = rng.random() < 1 / (1 + np.exp(-sign * 0.8 * (i - j)))
            a, b = (i, j) if wins_i else (j, i)
            rows.append({"prompt": f"Debate: {topic}. Which argument is more convincing?",
                         "chosen": arguments[topic][a], "rejected": arguments[topic][b], "user": user,
                         "topic": topic, "worker_stance": "none", "pair_id": f"{topic}:{min(i, j)}_{max(i, j)}"})
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return rows


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("ukp")
    write_judgments(root / "judgments.jsonl.gz")
    return root, ukp.run(out_dir=root / "out", data=root / "judgments.jsonl.gz", cache_dir=str(root / "cache"),
                         budgets=(5, 20))


def test_every_protocol_reports_the_keys_scripts_read(suite):
    _, out = suite
    for protocol in ("population", "seen_users"):
        for name in ("single_bt", "bayesmicro"):
            assert {"accuracy", "nll"} <= set(out[protocol][name])
    assert {"accuracy", "nll"} <= set(out["new_users"]["single_bt"]) & set(out["new_users"]["before"])
    assert set(out["new_users"]["after"]) == {"5", "20"}
    for name in ("single_bt", "bayesmicro"):
        for metric in ("personal_all", "personal_over50", "consensus"):
            assert set(out["crowdgppl"][name][metric]) == {"accuracy", "cee"}
    assert out["crowdgppl"]["published"]["crowdGPPL"]["personal_all"] == {"accuracy": 0.72, "cee": 0.58}
    assert {"embed", "population", "new_users", "seen_users", "crowdgppl", "single_bt_fit",
            "bayesmicro_fit"} <= set(out["seconds"])
    assert len(out["crowdgppl"]["folds"]) == len(TOPICS)
    assert out["new_users"]["annotators"] == 3 and out["population"]["capacity"]["k"] >= 1


def test_pair_split_keeps_each_comparison_on_one_side():
    pair_id = np.array(["a", "a", "b", "c", "c", "c", "d", "e"])
    train, test = ukp.split_by_pair(pair_id, np.arange(8), 0.4, seed=0)
    assert not set(pair_id[train]) & set(pair_id[test])
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(8))


def test_per_annotator_metrics_average_annotators_not_pairs():
    prob = torch.tensor([0.9, 0.9, 0.9, 0.2])
    users = np.array(["a", "a", "a", "b"])
    scores = ukp.per_annotator(prob, users)
    assert scores["accuracy"] == pytest.approx(0.5) and scores["pooled_accuracy"] == pytest.approx(0.75)
    assert scores["nll"] == pytest.approx((-np.log(0.9) - np.log(0.2)) / 2)


def test_majority_leaves_ties_out():
    columns = {"pair_id": np.array(["p", "p", "p", "q", "q"]), "chosen": np.array(["x", "x", "y", "x", "y"])}
    assert ukp._majority(columns) == {"p": "x"}


def test_a_table_without_a_protocol_column_is_refused(tmp_path):
    rows = write_judgments(tmp_path / "full.jsonl.gz")
    with gzip.open(tmp_path / "no_topic.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({k: v for k, v in row.items() if k != "topic"}) + "\n" for row in rows[:20])
    with pytest.raises(BadInput, match=r"missing column\(s\) \['topic'\]"):
        ukp.read_judgments(tmp_path / "no_topic.jsonl.gz")
    result = run_cli("bench", "ukp", "--data", tmp_path / "no_topic.jsonl.gz", "--out", tmp_path / "out")
    assert_bad_input(result, "no_topic.jsonl.gz", "topic")


def test_options_of_other_suites_are_refused_for_ukp(tmp_path):
    assert_bad_input(run_cli("bench", "ukp", "--pairs", "10", "--out", tmp_path / "out"), "--pairs")
