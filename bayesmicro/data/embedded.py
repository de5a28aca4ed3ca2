"""Embedded pairs: the numeric form every model consumes.

Keys (the same in a saved folder and in a user's ``.npz``):

- ``chosen``, ``rejected``: (n, d) response features h(x, a_w), h(x, a_l)
- ``prompt``: (n, d_p) router input e(x)
- ``context``: optional (n, d_c) context features
- ``group``, ``user``, ``split``: optional length-n labels (strings or integers); ``split`` uses "train"/"test"

A folder holds ``features.safetensors`` (float tensors, fp16 or fp32 on disk) and ``pairs.json`` (labels, shapes,
provenance). Loading never unpickles.
"""

from __future__ import annotations

import copy
import hashlib
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesmicro._io import atomic_dir, read_json, read_tensors, write_json, write_tensors
from bayesmicro.config import SEED, TEST_FRACTION
from bayesmicro.errors import BadInput

FEATURE_KEYS = ("chosen", "rejected", "prompt", "context")
LABEL_KEYS = ("group", "user", "split")
_GATHER_ROWS = 1024  # rows gathered at a time where a selection is computed on the fly
FEATURES_FILE = "features.safetensors"
META_FILE = "pairs.json"
FORMAT = "bayesmicro.embedded_pairs/1"
_FLOAT32_MAX = torch.finfo(torch.float32).max


def _row_index(rows: np.ndarray) -> torch.Tensor:
    """Row numbers (any integer sequence) as the int64 index tensor that gathers them."""
    return torch.as_tensor(np.asarray(rows, dtype=np.int64))


@dataclass
class EmbeddedPairs:
    chosen: torch.Tensor
    rejected: torch.Tensor
    prompt: torch.Tensor
    context: torch.Tensor | None = None
    group: np.ndarray | None = None
    user: np.ndarray | None = None
    split: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = "<embedded pairs>"

    def __post_init__(self) -> None:
        for key in FEATURE_KEYS:
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, _as_matrix(value, key, self.source))
        for key in LABEL_KEYS:
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, np.asarray(value).astype(str))
        self._check()

    # -- shape --------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.chosen.shape[0]

    @property
    def dim(self) -> int:
        return self.chosen.shape[1]

    @property
    def prompt_dim(self) -> int:
        return self.prompt.shape[1]

    @property
    def context_dim(self) -> int:
        return 0 if self.context is None else self.context.shape[1]

    def diff(self, rows: np.ndarray | None = None) -> torch.Tensor:
        """(n, d) float32 chosen − rejected of the pairs at ``rows`` (row numbers; None: every pair): all a linear
        BT head ever sees of a pair."""
        # Subtract before rounding to float32: near-duplicate responses stored in float64 keep their ~1e-7 difference.
        wide = torch.promote_types(torch.promote_types(self.chosen.dtype, self.rejected.dtype), torch.float32)
        if rows is None:
            return (self.chosen.to(wide) - self.rejected.to(wide)).float()
        # block by block into one output: gathering whole chosen/rejected copies first cost 2-4x the time (18,800 x
        # 3,072: 0.6-1.2 s against 0.27 s), mostly page faults on the fresh copies
        index = _row_index(rows)
        out = torch.empty(len(index), self.dim)
        for start in range(0, len(index), _GATHER_ROWS):
            block = index[start:start + _GATHER_ROWS]
            out[start:start + len(block)] = self.chosen[block].to(wide) - self.rejected[block].to(wide)
        return out

    def router_input(self, use_context: bool, rows: np.ndarray | None = None) -> torch.Tensor:
        """(n, d_p [+ d_c]) float32 features the router reads, of the pairs at ``rows`` (None: every pair; then a
        float32 prompt is returned as it is)."""
        index = None if rows is None else _row_index(rows)

        def rows_of(x: torch.Tensor) -> torch.Tensor:  # gathered in the stored dtype, then widened
            return (x if index is None else x[index]).float()

        if not use_context:
            return rows_of(self.prompt)
        if self.context is None:
            raise BadInput("router 'context' needs a 'context' feature matrix, and these pairs have none",
                           source=self.source)
        return torch.cat([rows_of(self.prompt), rows_of(self.context)], dim=1)

    # -- selection ----------------------------------------------------------------------------------------------
    def subset(self, index) -> "EmbeddedPairs":
        index = torch.as_tensor(np.asarray(index))
        if index.dtype == torch.bool:
            index = index.nonzero().squeeze(1)
        idx_np = index.numpy()
        rows = {**{k: getattr(self, k)[index] for k in FEATURE_KEYS if getattr(self, k) is not None},
                **{k: getattr(self, k)[idx_np] for k in LABEL_KEYS if getattr(self, k) is not None}}
        if len(idx_np) == 0:
            return replace(self, **rows)  # validation names the empty selection
        part = copy.copy(self)  # rows of checked pairs are checked pairs: skip the O(n·d) finiteness scan
        for key, value in rows.items():
            setattr(part, key, value)
        return part

    def part(self, name: str) -> "EmbeddedPairs":
        """The pairs whose ``split`` is ``name`` (all pairs when there is no split column)."""
        rows = self.part_rows(name)
        return self if rows is None else self.subset(rows)

    def part_rows(self, name: str) -> np.ndarray | None:
        """Row numbers of the pairs whose ``split`` is ``name`` (None: no split column, every pair)."""
        if self.split is None:
            return None
        rows = np.flatnonzero(self.split == name)
        if not rows.size:
            raise BadInput(f"no pairs with split == '{name}' (splits present: {sorted(set(self.split.tolist()))})",
                           source=self.source)
        return rows

    def with_split(self, test_fraction: float = TEST_FRACTION, seed: int = SEED) -> "EmbeddedPairs":
        """Keep an existing split; otherwise assign a random held-out fraction (by default the 0.2 and seed 0 that
        ``bayesmicro fit`` draws for DATA without a split column)."""
        if self.split is not None:
            return self
        n_test = int(round(test_fraction * len(self)))
        return self.with_test_pairs(np.random.default_rng(seed).permutation(len(self))[:n_test])

    def with_test_pairs(self, index) -> "EmbeddedPairs":
        """These pairs with ``split`` "test" at the row ``index`` (ints) and "train" elsewhere."""
        split = np.full(len(self), "train", dtype=object)
        split[np.asarray(index, dtype=np.int64)] = "test"
        return replace(self, split=split.astype(str))

    def with_label_context(self, key: str = "group", levels: Sequence[str] | None = None) -> "EmbeddedPairs":
        """These pairs with ``context`` = ``label_onehot(key, levels)`` — e.g. the attribute or subset a stage-2
        router is told."""
        return replace(self, context=self.label_onehot(key, levels))

    def label_onehot(self, key: str, levels: Sequence[str] | None = None,
                     rows: np.ndarray | None = None) -> torch.Tensor:
        """(n, L) one-hot of the ``key`` label ("group" or "user") of each pair (of those at ``rows``; None: all).
        Columns: ``levels`` in their order (a label outside them gets an all-zero row: one the coding has not seen),
        or the sorted labels of these pairs (``label_levels``)."""
        labels = self._labels(key) if rows is None else self._labels(key)[np.asarray(rows, dtype=np.int64)]
        levels = self.label_levels(key) if levels is None else [str(v) for v in levels]
        column = {level: j for j, level in enumerate(levels)}
        index = np.asarray([column.get(str(label), -1) for label in labels.tolist()], dtype=np.int64)
        onehot = torch.zeros(len(labels), len(levels))
        known = np.flatnonzero(index >= 0)
        onehot[torch.from_numpy(known), torch.from_numpy(index[known])] = 1.0
        return onehot

    def label_levels(self, key: str, rows: np.ndarray | None = None) -> list[str]:
        """The distinct ``key`` labels ("group" or "user") of these pairs (of those at ``rows``), as sorted strings."""
        labels = self._labels(key)
        return sorted({str(label) for label in (labels if rows is None else labels[rows]).tolist()})

    def _labels(self, key: str) -> np.ndarray:
        if key not in ("group", "user"):
            raise BadInput(f"a label context comes from 'group' or 'user', got {key!r}")
        labels = getattr(self, key)
        if labels is None:
            raise BadInput(f"a context from '{key}' needs a '{key}' label for every pair", source=self.source)
        return labels

    def fingerprint(self) -> str:
        """sha256 of the feature matrices (as float32, with their shapes): tells whether two files hold the same
        pairs in the same order, whatever their labels."""
        digest = hashlib.sha256()
        for key in FEATURE_KEYS:
            value = getattr(self, key)
            digest.update(f"{key}:{None if value is None else tuple(value.shape)};".encode())
            if value is not None:
                digest.update(value.float().contiguous().numpy().tobytes())
        return digest.hexdigest()

    # -- disk ---------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, dtype: torch.dtype = torch.float32, *, overwrite: bool = False) -> Path:
        """Write the folder atomically. ``path`` must not exist, be empty, or (``overwrite``) be an earlier
        embedded-pairs folder holding only what bayesmicro wrote; anything else is refused."""
        tensors = {k: getattr(self, k).to(dtype) for k in FEATURE_KEYS if getattr(self, k) is not None}
        labels = {k: getattr(self, k).tolist() for k in LABEL_KEYS if getattr(self, k) is not None}
        meta = {"format": FORMAT, "n": len(self), "dim": self.dim, "prompt_dim": self.prompt_dim,
                "context_dim": self.context_dim, "labels": labels, "meta": self.meta}
        with atomic_dir(path, "embedded_pairs", overwrite=overwrite) as tmp:
            write_tensors(tmp / FEATURES_FILE, tensors)
            write_json(tmp / META_FILE, meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EmbeddedPairs":
        """Load a saved folder or an ``.npz`` with the documented keys."""
        path = Path(path)
        if not path.exists():
            raise BadInput("not found (expected an embedded-pairs folder or an .npz file)", source=str(path))
        if path.is_dir():
            return _load_folder(path)
        if path.suffix.lower() == ".npz":
            return _load_npz(path)
        suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
        hint = (" (a table of text pairs? embed it first: bayesmicro embed FILE --out DIR)"
                if suffixes and suffixes[-1] in (".csv", ".jsonl", ".json", ".parquet") else "")
        raise BadInput(f"expected an embedded-pairs folder or an .npz file{hint}", source=str(path))

    # -- checks -------------------------------------------------------------------------------------------------
    def _check(self) -> None:
        n = self.chosen.shape[0]
        if n == 0:
            raise BadInput("no pairs (expected at least one row)", source=self.source)
        if self.rejected.shape != self.chosen.shape:
            raise BadInput(f"'rejected' has shape {tuple(self.rejected.shape)}, expected {tuple(self.chosen.shape)}"
                           " (same as 'chosen')", source=self.source)
        for key in ("prompt", "context"):
            value = getattr(self, key)
            if value is not None and value.shape[0] != n:
                raise BadInput(f"'{key}' has {value.shape[0]} rows, expected {n} (one per pair)", source=self.source)
        for key in LABEL_KEYS:
            value = getattr(self, key)
            if value is not None and value.shape != (n,):
                raise BadInput(f"'{key}' has shape {value.shape}, expected ({n},)", source=self.source)
        if self.split is not None:
            bad = sorted(set(self.split.tolist()) - {"train", "test"})
            if bad:
                raise BadInput(f"'split' has values {bad[:3]}, expected 'train' or 'test'", source=self.source)
        for key in FEATURE_KEYS:
            value = getattr(self, key)
            if value is not None:
                _check_finite(value, key, self.source)


def _as_matrix(value: Any, key: str, source: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.number) or np.issubdtype(value.dtype, np.complexfloating):
            raise BadInput(f"'{key}' has dtype {value.dtype}, expected a real floating-point matrix", source=source)
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise BadInput(f"'{key}' is a {type(value).__name__}, expected a matrix", source=source)
    if value.ndim != 2:
        raise BadInput(f"'{key}' has shape {tuple(value.shape)}, expected a 2-d matrix (pairs × features)",
                       source=source)
    if not value.is_floating_point():
        value = value.float()
    return value


def _check_finite(value: torch.Tensor, key: str, source: str) -> None:
    """Every entry finite, and finite in float32: the model computes in float32, where 1e39 becomes inf."""
    finite = torch.isfinite(value)
    if not bool(finite.all()):
        row, col = (~finite).nonzero()[0].tolist()
        raise BadInput(f"'{key}' row {row}, column {col}: value {value[row, col].item()} is not finite "
                       "(expected finite features)", source=source)
    if value.dtype == torch.float64:
        outside = value.abs() > _FLOAT32_MAX
        if bool(outside.any()):
            row, col = outside.nonzero()[0].tolist()
            raise BadInput(f"'{key}' row {row}, column {col}: value {value[row, col].item():.4g} overflows float32, "
                           f"the precision features are used in (expected |value| <= {_FLOAT32_MAX:.4g})",
                           source=source)


def _load_folder(path: Path) -> EmbeddedPairs:
    meta = read_json(path / META_FILE)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BadInput(f"'{META_FILE}' is not an embedded-pairs manifest (format {FORMAT!r})", source=str(path))
    tensors = read_tensors(path / FEATURES_FILE)
    for key in ("chosen", "rejected", "prompt"):
        if key not in tensors:
            raise BadInput(f"'{FEATURES_FILE}' lacks the '{key}' matrix", source=str(path))
    labels = meta.get("labels", {})
    return EmbeddedPairs(
        **{k: tensors.get(k) for k in FEATURE_KEYS},
        **{k: None if labels.get(k) is None else np.asarray(labels[k]) for k in LABEL_KEYS},
        meta=meta.get("meta", {}),
        source=str(path),
    )


def _load_npz(path: Path) -> EmbeddedPairs:
    if not zipfile.is_zipfile(path):  # np.load would try other formats (even a pickle) on a non-zip file
        raise BadInput("not an .npz archive (expected a zip of .npy arrays, as np.savez writes)", source=str(path))
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise BadInput(f"cannot read .npz ({exc})", source=str(path)) from None
    with archive:
        keys = set(archive.files)
        missing = [k for k in ("chosen", "rejected", "prompt") if k not in keys]
        if missing:
            raise BadInput(f"missing key(s) {missing}; expected chosen, rejected, prompt "
                           f"[, context, group, user, split] (found {sorted(keys)})", source=str(path))
        unknown = sorted(keys - set(FEATURE_KEYS) - set(LABEL_KEYS))
        if unknown:
            raise BadInput(f"unexpected key(s) {unknown}; allowed: {list(FEATURE_KEYS + LABEL_KEYS)}",
                           source=str(path))
        arrays = {}
        for key in sorted(keys):
            try:
                arrays[key] = archive[key]
            except ValueError as exc:
                if "allow_pickle" in str(exc):  # object arrays would need pickle
                    raise BadInput(f"array '{key}' is an object array: it needs pickle to load, which bayesmicro "
                                   "never does; store strings as fixed-width unicode", source=str(path)) from None
                raise BadInput(f"array '{key}' is damaged ({(str(exc).splitlines() or [''])[0][:200]})",
                               source=str(path)) from None
            except Exception as exc:  # a bad CRC, a truncated member, an unparsable .npy header
                raise BadInput(f"array '{key}' is damaged ({type(exc).__name__}: {str(exc)[:200]})",
                               source=str(path)) from None
            if not isinstance(arrays[key], np.ndarray):  # numpy hands back the raw bytes of a member with no header
                raise BadInput(f"array '{key}' is damaged (not a .npy array)", source=str(path))
    return EmbeddedPairs(**arrays, source=str(path))
