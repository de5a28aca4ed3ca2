import gzip
import json

import pytest

from bayesmicro.data.pairs import PreferencePairs, load_pairs
from bayesmicro.errors import BadInput

ROWS = [
    {"prompt": "p1", "chosen": "a", "rejected": "b", "group": "helpful", "user": 7},
    {"prompt": "p2", "chosen": "c", "rejected": "d", "group": "harmless", "user": 8},
]


def _write(path, rows, fmt):
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "jsonl.gz":
        with gzip.open(path, "wt") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    elif fmt == "csv":
        import csv

        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "parquet":
        import datasets

        datasets.Dataset.from_list(rows).to_parquet(str(path))


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "csv", "parquet"])
def test_readers_produce_the_same_pairs(tmp_path, fmt):
    path = tmp_path / f"pairs.{fmt}"
    _write(path, ROWS, fmt)
    pairs = load_pairs(path)
    assert len(pairs) == 2
    assert pairs["prompt"] == ["p1", "p2"] and pairs["rejected"] == ["b", "d"]
    assert pairs["user"] == ["7", "8"]  # labels become strings
    assert pairs["group"] == ["helpful", "harmless"]


def test_column_mapping(tmp_path):
    path = tmp_path / "x.jsonl"
    _write(path, [{"q": "p", "good": "a", "bad": "b"}], "jsonl")
    pairs = load_pairs(path, columns={"prompt": "q", "chosen": "good", "rejected": "bad"})
    assert pairs.columns == ["prompt", "chosen", "rejected"]
    assert pairs["chosen"] == ["a"]


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b'{"prompt": "p", "chosen": "a"}\n', "missing column"),
    (b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": broken\n', "line 2: not valid JSON"),
    (b'{"prompt": "p\xff", "chosen": "a", "rejected": "b"}\n', "line 1: not UTF-8"),
    (b'{"prompt": "p", "chosen": null, "rejected": "b"}\n', "row 0, column 'chosen'"),
], ids=["empty", "missing_column", "broken_line", "not_utf8", "null_text"])
def test_bad_jsonl_is_named(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(BadInput, match=message) as info:
        load_pairs(path)
    assert str(path) in str(info.value)


def test_csv_with_only_a_header(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("prompt,chosen,rejected\n")
    with pytest.raises(BadInput, match="no rows"):
        load_pairs(path)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "t.jsonl.gz"
    _write(path, ROWS * 50, "jsonl.gz")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(BadInput, match="compressed"):
        load_pairs(path)


def test_unknown_extension(tmp_path):
    path = tmp_path / "x.xlsx"
    path.write_text("x")
    with pytest.raises(BadInput, match="unknown file type"):
        load_pairs(path)


def test_from_dict_checks_schema():
    with pytest.raises(BadInput, match="missing column"):
        PreferencePairs.from_dict({"prompt": ["p"], "chosen": ["a"]})
