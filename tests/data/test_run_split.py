"""``data.run_split``: the held-out rows a run was fitted with, found again only on the same pairs."""

import json
from dataclasses import replace

import numpy as np
import pytest

from bayesmicro.data.run_split import SPLIT_FILE, with_run_split, write_run_split
from bayesmicro.errors import BadInput
from tests.common import small_pairs


@pytest.fixture
def run_with_split(tmp_path):
    data = small_pairs(n=40)
    write_run_split(tmp_path, data.with_split(0.25, seed=3), test_fraction=0.25, seed=3)
    return tmp_path, data


def test_the_recorded_rows_come_back_on_the_same_pairs(run_with_split):
    run, data = run_with_split
    restored, note = with_run_split(data, run)
    assert restored.split.tolist() == data.with_split(0.25, seed=3).split.tolist()
    assert "10 of 40 pairs held out" in note


def test_labels_do_not_change_the_fingerprint_but_one_feature_does():
    data = small_pairs(n=20)
    assert replace(data, group=np.array(["a"] * 20)).fingerprint() == data.fingerprint()
    nudged = data.chosen.clone()
    nudged[7, 1] += 1e-3
    assert replace(data, chosen=nudged).fingerprint() != data.fingerprint()
    assert data.subset(np.arange(19)).fingerprint() != data.fingerprint()


def test_other_pairs_or_a_split_of_their_own_keep_theirs(run_with_split):
    run, data = run_with_split
    nudged = data.rejected.clone()
    nudged[0, 0] += 1.0
    other, note = with_run_split(replace(data, rejected=nudged), run)
    assert other.split is None and "not the data" in note
    own = data.with_split(0.5, seed=0)
    assert with_run_split(own, run) == (own, None)
    assert with_run_split(data, run / "no_such_run") == (data, None)


@pytest.mark.parametrize("record, message", [
    ({"format": "something else"}, "not a run split file"),
    ({"format": "bayesmicro.run_split/1", "n": 40, "fingerprint": "x", "test": "0,1"}, "a list 'test'"),
    ({"format": "bayesmicro.run_split/1", "n": 40, "fingerprint": "x", "test": [3, 40]}, "row numbers in [0, 40)"),
    ({"format": "bayesmicro.run_split/1", "n": 40, "fingerprint": "x", "test": [1.5]}, "row numbers in [0, 40)"),
], ids=["wrong_format", "test_not_a_list", "row_out_of_range", "row_not_an_int"])
def test_a_damaged_split_file_is_named(run_with_split, record, message):
    run, data = run_with_split
    (run / SPLIT_FILE).write_text(json.dumps(record))
    with pytest.raises(BadInput) as caught:
        with_run_split(data, run)
    assert message in str(caught.value) and SPLIT_FILE in str(caught.value)
