"""Shared plumbing for protocol loaders: local-file-or-hub sources, split files in a folder, ``limit``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bayesmicro.data.pairs import PreferencePairs, is_local, read_table
from bayesmicro.errors import BadInput

if TYPE_CHECKING:
    import datasets

_TABLE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".csv", ".csv.gz", ".parquet")


def read_hub_split(repo_id: str, split: str, **kwargs: Any) -> datasets.Dataset:
    """One split of a hub dataset (``kwargs`` go to ``datasets.load_dataset``, e.g. ``data_dir``)."""
    import datasets

    try:
        return datasets.load_dataset(repo_id, split=split, **kwargs)
    except Exception as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise BadInput(f"cannot load hub dataset '{repo_id}' (split {split!r}, {kwargs or 'default config'}): "
                       f"{type(exc).__name__}: {first} — offline? pass a local file or folder instead",
                       source=repo_id) from None


def split_file(folder: Path, split: str) -> Path | None:
    """The table for ``split`` in a local copy of a hub repo: ``train.jsonl.gz``, ``data/train-00000-….parquet``…"""
    found = sorted(p for p in folder.rglob(f"{split}*") if p.is_file() and p.name.lower().endswith(_TABLE_SUFFIXES))
    if len(found) > 1:
        raise BadInput(f"several files for split '{split}': {[str(p) for p in found[:4]]}", source=str(folder))
    return found[0] if found else None


def read_split(source: str | os.PathLike | None, hub_id: str, split: str, **hub_kwargs: Any) -> datasets.Dataset:
    """``split`` from a local file (used as is), a local folder (its ``<split>*`` file), or the hub."""
    if source is not None and is_local(source):
        path = Path(source)
        if path.is_dir():
            file = split_file(path, split)
            if file is None:
                raise BadInput(f"no file for split '{split}' (expected e.g. {split}.jsonl.gz)", source=str(path))
            return read_table(file)
        return read_table(path)
    return read_hub_split(str(source or hub_id), split, **hub_kwargs)


def require_columns(ds: datasets.Dataset, columns: Sequence[str], source: str) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise BadInput(f"missing column(s) {missing} (found {ds.column_names})", source=source)


def limited(columns: Mapping[str, list], limit: int | None, seed: int = 0) -> dict[str, list]:
    """At most ``limit`` rows: a seeded random subset kept in source order (sources are often sorted by group)."""
    n = len(next(iter(columns.values())))
    if limit is None or limit >= n:
        return dict(columns)
    if limit < 1:
        raise BadInput(f"--limit must be ≥ 1, got {limit}")
    keep = np.sort(np.random.default_rng(seed).permutation(n)[:limit])
    return {name: [values[i] for i in keep] for name, values in columns.items()}


def to_pairs(columns: Mapping[str, list], source: str, limit: int | None) -> PreferencePairs:
    columns = limited(columns, limit)
    if not columns["prompt"]:
        raise BadInput("no preference pairs after applying the protocol", source=source)
    return PreferencePairs.from_dict(columns, source=source)
