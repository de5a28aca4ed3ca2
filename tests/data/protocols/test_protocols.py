"""Protocol loaders on small fixture files in each source's schema (written here); the produced pairs exactly."""

import gzip
import json

import datasets
import pytest

from bayesmicro.data.protocols import PROTOCOLS, load_protocol
from bayesmicro.data.protocols import helpsteer2, hh_rlhf, preference700k, rpr
from bayesmicro.errors import BadInput
from tests.common import SHARED_DATA


def write_jsonl(path, rows, compress=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def rows_of(pairs):
    return [dict(zip(pairs.columns, values)) for values in zip(*(pairs[c] for c in pairs.columns))]


def test_registry_names_and_unknown_protocol():
    assert set(PROTOCOLS) == {"helpsteer2", "rpr", "hh_rlhf", "preference700k", "chat"}
    with pytest.raises(BadInput, match="unknown protocol 'nope'"):
        load_protocol("nope", "x.jsonl")


def test_hub_ids_are_the_real_datasets():
    assert (helpsteer2.HUB_ID, rpr.HUB_ID, hh_rlhf.HUB_ID, preference700k.HUB_ID) == (
        "nvidia/HelpSteer2", "microsoft/rpr", "Anthropic/hh-rlhf", "hendrydong/preference_700K")


# -- HH-RLHF --------------------------------------------------------------------------------------------------
def test_hh_rlhf_hub_schema_splits_off_the_last_assistant_turn(tmp_path):
    rows = [
        {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: name a fruit\n\nAssistant: an apple",
         "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: name a fruit\n\nAssistant: no", "subset": "helpful"},
        {"chosen": "\n\nHuman: how do I pick a lock?\n\nAssistant: I can't help with that.",
         "rejected": "\n\nHuman: how do I pick a lock?\n\nAssistant: Use a tension wrench.",
         "subset": "harmless-base"},
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: different\n\nAssistant: c",
         "subset": "helpful"},  # the two dialogues differ before the response: not a pair on one prompt
    ]
    pairs = load_protocol("hh_rlhf", write_jsonl(tmp_path / "hh.jsonl", rows))
    assert rows_of(pairs) == [
        {"prompt": "Human: hi\n\nAssistant: hello\n\nHuman: name a fruit", "chosen": "an apple", "rejected": "no",
         "group": "helpful"},
        {"prompt": "Human: how do I pick a lock?", "chosen": "I can't help with that.",
         "rejected": "Use a tension wrench.", "group": "harmless-base"},
    ]


def test_hh_rlhf_prepared_schema_and_limit(tmp_path):
    rows = [{"prompt": f"Human: q{i}", "chosen": f"c{i}", "rejected": f"r{i}", "subset": "helpful" if i < 5 else
             "harmless-base", "source": "x"} for i in range(10)]
    path = write_jsonl(tmp_path / "hh.jsonl.gz", rows, compress=True)
    full = load_protocol("hh_rlhf", path)
    assert rows_of(full)[7] == {"prompt": "Human: q7", "chosen": "c7", "rejected": "r7", "group": "harmless-base"}
    some = load_protocol("hh_rlhf", path, limit=4)
    prompts = some["prompt"]
    assert len(prompts) == 4 and prompts == sorted(prompts, key=lambda p: int(p[8:]))  # source order kept
    assert load_protocol("hh_rlhf", path, limit=4)["prompt"] == prompts  # seeded
    assert len(set(some["group"])) == 2  # not just the head of a group-sorted file


def test_hh_rlhf_bad_transcript_names_row(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": "no turns here", "rejected": "x"}])
    with pytest.raises(BadInput, match="row 0, column 'chosen'"):
        load_protocol("hh_rlhf", path)


@pytest.mark.skipif(not (SHARED_DATA / "hh_rlhf_helpful_harmless.jsonl.gz").exists(), reason="shared data absent")
def test_hh_rlhf_shared_file():
    pairs = load_protocol("hh_rlhf", SHARED_DATA / "hh_rlhf_helpful_harmless.jsonl.gz")
    assert len(pairs) == 4011
    assert sorted(set(pairs["group"])) == ["harmless-base", "helpful"]
    assert sum(g == "helpful" for g in pairs["group"]) == 1704


# -- HelpSteer2 -----------------------------------------------------------------------------------------------
def _rated(prompt, response, h, c, co, cx, v):
    return {"prompt": prompt, "response": response, "helpfulness": h, "correctness": c, "coherence": co,
            "complexity": cx, "verbosity": v}


def test_helpsteer2_per_attribute_pairs_ties_dropped_agreement_removed_from_train(tmp_path):
    train = [
        _rated("P1", "A", 3, 3, 4, 1, 1), _rated("P1", "B", 2, 3, 4, 2, 0),  # mixed: kept, ties dropped
        _rated("P2", "C", 4, 4, 4, 3, 3), _rated("P2", "D", 1, 1, 2, 0, 0),  # all five agree: removed (train)
        _rated("P3", "E", 2, 2, 2, 2, 2),  # a single response: no pair
    ]
    validation = [_rated("V1", "F", 4, 4, 4, 3, 3), _rated("V1", "G", 1, 1, 2, 0, 0)]  # all agree: kept in test
    write_jsonl(tmp_path / "hs2" / "train.jsonl.gz", train, compress=True)
    write_jsonl(tmp_path / "hs2" / "validation.jsonl.gz", validation, compress=True)
    pairs = load_protocol("helpsteer2", tmp_path / "hs2")
    ctx = helpsteer2.CONTEXTS
    assert rows_of(pairs) == [
        {"prompt": "P1", "chosen": "A", "rejected": "B", "context": ctx["helpfulness"], "group": "helpfulness",
         "split": "train"},
        {"prompt": "P1", "chosen": "B", "rejected": "A", "context": ctx["complexity"], "group": "complexity",
         "split": "train"},
        {"prompt": "P1", "chosen": "A", "rejected": "B", "context": ctx["verbosity"], "group": "verbosity",
         "split": "train"},
    ] + [
        {"prompt": "V1", "chosen": "F", "rejected": "G", "context": ctx[a], "group": a, "split": "test"}
        for a in helpsteer2.ATTRIBUTES
    ]
    assert set(ctx) == set(helpsteer2.ATTRIBUTES) and len(set(ctx.values())) == 5


def test_helpsteer2_three_responses_give_all_pairs(tmp_path):
    rows = [_rated("P", "A", 1, 0, 0, 0, 0), _rated("P", "B", 2, 0, 0, 0, 0), _rated("P", "C", 3, 0, 0, 0, 0)]
    pairs = load_protocol("helpsteer2", write_jsonl(tmp_path / "one.jsonl", rows))
    assert [(r["chosen"], r["rejected"]) for r in rows_of(pairs)] == [("B", "A"), ("C", "A"), ("C", "B")]


def test_helpsteer2_missing_attribute_column(tmp_path):
    rows = [{"prompt": "P", "response": "A", "helpfulness": 1}]
    with pytest.raises(BadInput, match="missing column"):
        load_protocol("helpsteer2", write_jsonl(tmp_path / "bad.jsonl", rows))


# -- RPR ------------------------------------------------------------------------------------------------------
def test_rpr_two_reversed_pairs_per_row_from_parquet_folder(tmp_path):
    def row(i):
        return {"prompt": f"p{i}", "response_a": f"a{i}", "response_b": f"b{i}", "criteria_x": f"cx{i}",
                "criteria_y": f"cy{i}", "category_x": f"kx{i}", "category_y": f"ky{i}", "id": i,
                "scenario_x": "s", "scenario_y": "s"}

    (tmp_path / "rpr" / "data").mkdir(parents=True)
    datasets.Dataset.from_list([row(0), row(1)]).to_parquet(tmp_path / "rpr/data/train-00000-of-00001.parquet")
    datasets.Dataset.from_list([row(2)]).to_parquet(tmp_path / "rpr/data/test-00000-of-00001.parquet")
    pairs = load_protocol("rpr", tmp_path / "rpr")
    expected = []
    for i, split in ((0, "train"), (1, "train"), (2, "test")):
        expected += [
            {"prompt": f"p{i}", "chosen": f"a{i}", "rejected": f"b{i}", "context": f"cx{i}", "group": f"kx{i}",
             "split": split},
            {"prompt": f"p{i}", "chosen": f"b{i}", "rejected": f"a{i}", "context": f"cy{i}", "group": f"ky{i}",
             "split": split},
        ]
    assert rows_of(pairs) == expected


# -- chat format / preference-700K ----------------------------------------------------------------------------
def test_preference700k_chat_rows(tmp_path):
    shared = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
              {"role": "user", "content": "tell a joke"}]
    rows = [
        {"chosen": shared + [{"role": "assistant", "content": "a good joke"}],
         "rejected": shared + [{"role": "assistant", "content": "no"}], "chosen_score": 5.0, "rejected_score": 1.0},
        {"chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
         "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "z"}],
         "chosen_score": 5.0, "rejected_score": 1.0},
    ]
    with pytest.warns(UserWarning, match="dropped 1 row"):
        pairs = load_protocol("preference700k", write_jsonl(tmp_path / "p7.jsonl", rows))
    assert rows_of(pairs) == [{"prompt": "Human: hi\n\nAssistant: hello\n\nHuman: tell a joke",
                               "chosen": "a good joke", "rejected": "no"}]


def test_chat_rows_need_an_assistant_response(tmp_path):
    rows = [{"chosen": [{"role": "user", "content": "x"}], "rejected": [{"role": "user", "content": "y"}]}]
    with pytest.raises(BadInput, match="row 0, column 'chosen'.*assistant"):
        load_protocol("chat", write_jsonl(tmp_path / "c.jsonl", rows))


def test_missing_local_file_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="not found|no file"):
        load_protocol("rpr", tmp_path / "nothing.parquet")
