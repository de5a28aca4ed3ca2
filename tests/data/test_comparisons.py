"""The comparisons protocol: one-hot item codes with the last item as reference, ties dropped, covariates."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from bayesmicro.data.protocols.comparisons import load_comparisons
from bayesmicro.errors import BadInput
from tests.common import SHARED_DATA

TABLE = """subject,item1,item2,outcome,lang,age
s1,A,B,1,good,20
s1,B,C,-1,good,20
s1,A,C,0,good,20
s2,C,A,-1,poor,31
s2,B,A,1,poor,31
"""


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "cmp.csv"
    path.write_text(TABLE)
    return path


def test_items_are_one_hot_with_last_item_as_reference(table):
    pairs = load_comparisons(table, context_cols=["lang", "age"])
    assert pairs.meta["items"] == ["A", "B", "C"] and pairs.meta["reference_item"] == "C"
    assert pairs.meta["ties_dropped"] == 1 and len(pairs) == 4
    # rows kept: A>B, C>B (outcome -1), A>C (C,A,-1), B>A
    expected = torch.tensor([[1.0, -1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 1.0]])
    assert torch.equal(pairs.diff(), expected)
    assert pairs.meta["covariates"] == ["lang=poor", "age"]
    assert torch.equal(pairs.prompt, torch.tensor([[0.0, 20.0], [0.0, 20.0], [1.0, 31.0], [1.0, 31.0]]))
    assert pairs.user.tolist() == ["s1", "s1", "s2", "s2"]


def test_no_covariates_gives_an_empty_router_input(table):
    pairs = load_comparisons(table)
    assert pairs.prompt.shape == (4, 0)


@pytest.mark.parametrize("bad, message", [
    ("s1,A,B,2,good,20", "row 0: 'outcome' is 2"),
    ("s1,A,A,1,good,20", "row 0: 'item1' and 'item2' are the same item"),
], ids=["outcome-not-pm1", "same-item"])
def test_bad_rows_name_the_row(tmp_path, bad, message):
    path = tmp_path / "bad.csv"
    path.write_text(TABLE.splitlines()[0] + "\n" + bad + "\n")
    with pytest.raises(BadInput, match=message):
        load_comparisons(path)


def test_missing_column_is_named(table):
    with pytest.raises(BadInput, match=r"missing column\(s\) \['gender'\]"):
        load_comparisons(table, context_cols=["gender"])


def test_real_cems_table():
    pairs = load_comparisons(SHARED_DATA / "cems_choice.csv.gz",
                             context_cols=["english", "french", "spanish", "italian"])
    with gzip.open(SHARED_DATA / "cems_choice.csv.gz", "rt") as fh:
        rows = [line.split(",") for line in fh.read().splitlines()[1:]]
    assert len(pairs) == sum(r[3] != "0" for r in rows)
    assert pairs.dim == 5 and pairs.prompt.shape[1] == 4
    # every comparison is +e_i − e_j, or ±e_i against the reference item
    diff = pairs.diff()
    assert set(np.unique(diff.numpy())) <= {-1.0, 0.0, 1.0}
    assert bool((diff.abs().sum(1) >= 1).all()) and bool((diff.sum(1).abs() <= 1).all())
