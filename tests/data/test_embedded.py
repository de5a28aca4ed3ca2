import numpy as np
import pytest
import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from tests.common import assert_close, small_pairs


def test_folder_round_trip_keeps_every_key(tmp_path):
    data = small_pairs(n=12, group=np.array(["a", "b"] * 6), user=np.arange(12), split=np.array(["train"] * 9 + ["test"] * 3))
    data.save(tmp_path / "pairs")
    loaded = EmbeddedPairs.load(tmp_path / "pairs")
    for key in ("chosen", "rejected", "prompt", "context"):
        assert_close(getattr(loaded, key), getattr(data, key), atol=0)
    assert loaded.group.tolist() == data.group.tolist()
    assert loaded.user.tolist() == [str(i) for i in range(12)]
    assert len(loaded.part("test")) == 3


def test_fp16_storage_halves_size_and_rounds(tmp_path):
    data = small_pairs(n=50, d=64)
    data.save(tmp_path / "fp32")
    data.save(tmp_path / "fp16", dtype=torch.float16)
    size = lambda p: (p / "features.safetensors").stat().st_size  # noqa: E731
    assert size(tmp_path / "fp16") < 0.6 * size(tmp_path / "fp32")
    assert_close(EmbeddedPairs.load(tmp_path / "fp16").chosen, data.chosen, atol=2e-3, rtol=1e-3)


def test_npz_with_the_documented_keys(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "f.npz"
    np.savez(path, chosen=rng.normal(size=(8, 3)), rejected=rng.normal(size=(8, 3)), prompt=rng.normal(size=(8, 2)),
             group=np.array(["x"] * 8), split=np.array(["train"] * 6 + ["test"] * 2))
    data = EmbeddedPairs.load(path)
    assert len(data) == 8 and data.dim == 3 and data.prompt_dim == 2 and data.context is None
    assert data.chosen.dtype == torch.float64 or data.chosen.dtype == torch.float32


@pytest.mark.parametrize("arrays, message", [
    (dict(chosen=np.zeros((4, 3)), rejected=np.zeros((4, 3))), "missing key"),
    (dict(chosen=np.zeros((4, 3)), rejected=np.zeros((4, 2)), prompt=np.zeros((4, 2))), "'rejected' has shape"),
    (dict(chosen=np.zeros((4, 3)), rejected=np.zeros((4, 3)), prompt=np.zeros((5, 2))), "'prompt' has 5 rows"),
    (dict(chosen=np.array([[0.0, np.nan, 0.0]] * 4), rejected=np.zeros((4, 3)), prompt=np.zeros((4, 2))),
     "'chosen' row 0, column 1"),
    (dict(chosen=np.zeros((4, 3)), rejected=np.full((4, 3), np.inf), prompt=np.zeros((4, 2))), "not finite"),
    (dict(chosen=np.zeros((0, 3)), rejected=np.zeros((0, 3)), prompt=np.zeros((0, 2))), "no pairs"),
    (dict(chosen=np.zeros(4), rejected=np.zeros(4), prompt=np.zeros((4, 2))), "2-d matrix"),
    (dict(chosen=np.zeros((4, 3)), rejected=np.zeros((4, 3)), prompt=np.zeros((4, 2)), extra=np.zeros(4)),
     "unexpected key"),
    (dict(chosen=np.array([["a"] * 3] * 4), rejected=np.zeros((4, 3)), prompt=np.zeros((4, 2))), "dtype"),
    (dict(chosen=np.zeros((4, 3)), rejected=np.zeros((4, 3)), prompt=np.zeros((4, 2)), split=np.array(["a"] * 4)),
     "'split' has values"),
], ids=["missing_prompt", "shape_mismatch", "row_mismatch", "nan", "inf", "empty", "vector", "unknown_key",
        "string_features", "bad_split"])
def test_bad_npz_is_named(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(BadInput, match=message) as info:
        EmbeddedPairs.load(path)
    assert str(path) in str(info.value)


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, chosen=np.zeros((2, 2)), rejected=np.zeros((2, 2)), prompt=np.zeros((2, 1)),
             group=np.array([{"x": 1}, None], dtype=object))
    with pytest.raises(BadInput, match="pickle"):
        EmbeddedPairs.load(path)


def test_with_split_keeps_existing_and_assigns_fraction():
    data = small_pairs(n=100)
    split = data.with_split(0.25, seed=1)
    assert (split.split == "test").sum() == 25
    assert split.with_split(0.5, seed=2) is split


def test_missing_folder_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        EmbeddedPairs.load(tmp_path / "nope")


def test_label_context_is_the_one_hot_of_the_sorted_labels():
    data = small_pairs(n=6, group=np.array(["b", "a", "c", "a", "b", "c"]))
    assert data.with_label_context("group").context.tolist() == [
        [0, 1, 0], [1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    with pytest.raises(BadInput, match="'user' label"):
        data.with_label_context("user")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=["fp32", "fp64", "fp16"])
def test_diff_of_rows_equals_the_diff_of_those_pairs_across_gather_blocks(dtype):
    data = small_pairs(n=2600, d=3)
    chosen = data.chosen.double()
    data = EmbeddedPairs(chosen=chosen.to(dtype), rejected=(chosen + 1e-7 * data.rejected.double()).to(dtype),
                         prompt=data.prompt)
    rows = np.random.default_rng(0).permutation(2600)[:2100]  # more than two blocks of 1,024, out of order
    got = data.diff(rows)
    assert got.dtype == torch.float32 and got.shape == (2100, 3)
    assert torch.equal(got, data.subset(rows).diff())
    if dtype == torch.float64:  # near-duplicates keep their difference: subtracted before rounding to float32
        assert bool((got != 0).all())


def test_part_rows_names_the_rows_of_a_split():
    data = small_pairs(n=6, split=np.array(["train", "test", "train", "train", "test", "train"]))
    assert data.part_rows("train").tolist() == [0, 2, 3, 5]
    assert torch.equal(data.part("test").chosen, data.chosen[[1, 4]])
    assert small_pairs(n=6).part_rows("train") is None
    with pytest.raises(BadInput, match="no pairs with split == 'valid'"):
        data.part_rows("valid")


def test_label_levels_of_some_rows():
    data = small_pairs(n=5, group=np.array(["b", "a", "c", "a", "b"]))
    assert data.label_levels("group") == ["a", "b", "c"]
    assert data.label_levels("group", np.array([0, 4, 3])) == ["a", "b"]


def test_label_onehot_of_rows_equals_that_of_those_pairs():
    data = small_pairs(n=5, group=np.array(["b", "a", "c", "a", "b"]))
    rows = np.array([4, 1, 1, 2])
    got = data.label_onehot("group", ["a", "b"], rows)  # "c" is outside the levels: an all-zero row
    assert torch.equal(got, data.subset(rows).label_onehot("group", ["a", "b"]))
    assert got.tolist() == [[0, 1], [1, 0], [1, 0], [0, 0]]


@pytest.mark.parametrize("use_context", [False, True], ids=["prompt", "prompt+context"])
def test_router_input_of_rows_equals_that_of_those_pairs(use_context):
    data = small_pairs(n=30)
    data = EmbeddedPairs(data.chosen, data.rejected, data.prompt.half(), data.context.half())  # as the embed cache
    rows = np.array([29, 3, 3, 17])
    got = data.router_input(use_context, rows)
    assert got.dtype == torch.float32 and torch.equal(got, data.subset(rows).router_input(use_context))
