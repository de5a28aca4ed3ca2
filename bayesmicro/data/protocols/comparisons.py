"""Classical paired-comparison tables (``subject,item1,item2,outcome`` + covariates) as embedded pairs.

The model R's ``psychomix::btmix`` / ``flexmix`` fits: item worths are linear in a one-hot item code with the LAST
item (in order of first appearance) as reference, so ``d = n_items − 1`` and a comparison's feature difference is
``onehot(item1) − onehot(item2)``. ``outcome`` is +1 (item1 preferred), −1 (item2 preferred) or 0 (no preference);
ties (0) are dropped. The preferred item becomes ``chosen``. Covariates become the router input (``prompt``):
numeric columns as they are, text columns one-hot with their first level (sorted) as reference.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.data.pairs import read_table
from bayesmicro.errors import BadInput

OUTCOMES = (1, -1, 0)


def load_comparisons(
    path: str | os.PathLike,
    *,
    item1_col: str = "item1",
    item2_col: str = "item2",
    outcome_col: str = "outcome",
    user_col: str | None = "subject",
    context_cols: Sequence[str] = (),
) -> EmbeddedPairs:
    """Read a paired-comparison table into ``EmbeddedPairs`` (no split).

    Returns chosen/rejected (n, n_items − 1) one-hot item codes, prompt (n, p) router covariates (p may be 0),
    ``user`` = the subject column. ``meta`` records ``items``, ``reference_item``, ``covariates`` (names of the
    router columns) and ``ties_dropped``.
    """
    source = str(path)
    table = read_table(path)
    needed = [item1_col, item2_col, outcome_col, *([user_col] if user_col else []), *context_cols]
    absent = [c for c in needed if c not in table.column_names]
    if absent:
        raise BadInput(f"missing column(s) {absent} (found {table.column_names})", source=source)
    return comparisons_from_columns(
        {c: table[c] for c in needed}, item1_col=item1_col, item2_col=item2_col, outcome_col=outcome_col,
        user_col=user_col, context_cols=context_cols, source=source)


def comparisons_from_columns(
    columns: dict[str, list],
    *,
    item1_col: str = "item1",
    item2_col: str = "item2",
    outcome_col: str = "outcome",
    user_col: str | None = "subject",
    context_cols: Sequence[str] = (),
    source: str = "<comparisons>",
) -> EmbeddedPairs:
    """``load_comparisons`` on in-memory columns (name → list of values, all the same length)."""
    outcome = _outcomes(columns[outcome_col], outcome_col, source)
    item1 = _text(columns[item1_col], item1_col, source)
    item2 = _text(columns[item2_col], item2_col, source)
    same = np.flatnonzero(item1 == item2)
    if same.size:
        raise BadInput(f"row {same[0]}: '{item1_col}' and '{item2_col}' are the same item ({item1[same[0]]!r})",
                       source=source)
    items = list(dict.fromkeys(np.stack([item1, item2], 1).ravel().tolist()))
    if len(items) < 2:
        raise BadInput("fewer than two distinct items", source=source)
    keep = outcome != 0
    if not keep.any():
        raise BadInput(f"every row is a tie ('{outcome_col}' = 0); nothing to fit", source=source)
    code = {item: i for i, item in enumerate(items)}
    eye = torch.eye(len(items))[:, :-1]  # the last item is the reference: its worth is 0
    first = torch.as_tensor([code[i] for i in item1[keep]])
    second = torch.as_tensor([code[i] for i in item2[keep]])
    item1_wins = torch.from_numpy(outcome[keep] > 0)
    winner = torch.where(item1_wins, first, second)
    loser = torch.where(item1_wins, second, first)
    covariates, names, spec = _covariates(columns, context_cols, keep, source)
    user = None if user_col is None else _text(columns[user_col], user_col, source)[keep]
    return EmbeddedPairs(
        chosen=eye[winner], rejected=eye[loser], prompt=covariates, user=user,
        meta={"protocol": "comparisons", "items": items, "reference_item": items[-1], "covariates": names,
              "covariate_spec": spec, "ties_dropped": int((~keep).sum())},
        source=source,
    )


def _text(values: list, column: str, source: str) -> np.ndarray:
    missing = [i for i, v in enumerate(values) if v is None or (isinstance(v, float) and np.isnan(v))]
    if missing:
        raise BadInput(f"row {missing[0]}: '{column}' is empty", source=source)
    return np.asarray([str(v) for v in values])


def _outcomes(values: list, column: str, source: str) -> np.ndarray:
    out = np.zeros(len(values), dtype=np.int64)
    for row, value in enumerate(values):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if number not in OUTCOMES:
            shown = value if number == number else repr(value)  # a number as is, text quoted
            raise BadInput(f"row {row}: '{column}' is {shown}, expected +1 (item1 preferred), -1 (item2) or "
                           "0 (no preference)", source=source)
        out[row] = int(number)
    return out


def _as_numbers(values: list) -> np.ndarray | None:
    """The column as float64 when every value is a number or numeric text (CSV fields arrive as text), else None."""
    if any(isinstance(v, bool) for v in values):
        return None
    try:
        return np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _covariates(columns: dict[str, list], names: Sequence[str], keep: np.ndarray,
                source: str) -> tuple[torch.Tensor, list[str], list[dict]]:
    """(n_kept, p) router covariates: numeric as is, text one-hot without its first level; the column names; the
    coding of each source column ({"column", "kind": numeric | text, "levels"}) to encode new tables the same way."""
    blocks, out_names, spec = [], [], []
    for name in names:
        values = columns[name]
        if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in values):
            row = next(i for i, v in enumerate(values) if v is None or (isinstance(v, float) and np.isnan(v)))
            raise BadInput(f"row {row}: covariate '{name}' is empty", source=source)
        numeric = _as_numbers(values)
        if numeric is not None:
            blocks.append(torch.as_tensor(numeric[keep], dtype=torch.float32)[:, None])
            out_names.append(name)
            spec.append({"column": name, "kind": "numeric", "levels": []})
            continue
        text = np.asarray([str(v) for v in values])[keep]
        levels = sorted(set(text.tolist()))
        for level in levels[1:]:
            blocks.append(torch.from_numpy((text == level).astype(np.float32))[:, None])
            out_names.append(f"{name}={level}")
        spec.append({"column": name, "kind": "text", "levels": levels})
    n = int(keep.sum())
    return (torch.cat(blocks, 1) if blocks else torch.zeros(n, 0)), out_names, spec


@dataclass(frozen=True)
class ComparisonRows:
    """Rows of a comparisons table coded like a training table: ``diff`` (n, d) = onehot(item1) − onehot(item2)
    (reference item dropped), ``user`` (n,), ``covariates`` (n, p) router input, ``outcome`` (n,) in {+1, −1, 0} or
    None when the table has no outcome column."""

    diff: torch.Tensor
    user: np.ndarray
    covariates: torch.Tensor
    outcome: np.ndarray | None


def encode_rows(columns: dict[str, list], *, items: Sequence[str], covariate_spec: Sequence[dict],
                item1_col: str = "item1", item2_col: str = "item2", user_col: str = "subject",
                outcome_col: str | None = "outcome", source: str = "<comparisons>") -> ComparisonRows:
    """Code every row of a new table (ties kept) with a training table's ``items`` (last = reference) and
    ``covariate_spec``; an unknown item or covariate level is a BadInput naming its row."""
    needed = [item1_col, item2_col, user_col, *(s["column"] for s in covariate_spec)]
    absent = [c for c in needed if c not in columns]
    if absent:
        raise BadInput(f"missing column(s) {absent} (found {sorted(columns)})", source=source)
    code = {item: i for i, item in enumerate(items)}
    eye = torch.eye(len(items), dtype=torch.float64)[:, :-1]
    index = []
    for col in (item1_col, item2_col):
        values = _text(columns[col], col, source)
        unknown = [i for i, v in enumerate(values) if v not in code]
        if unknown:
            raise BadInput(f"row {unknown[0]}: '{col}' is {str(values[unknown[0]])!r}, an item the run never saw "
                           f"(items: {list(items)})", source=source)
        index.append(torch.as_tensor([code[v] for v in values], dtype=torch.long))
    n = len(index[0])
    outcome = None
    if outcome_col is not None and outcome_col in columns:
        outcome = _outcomes(columns[outcome_col], outcome_col, source)
    blocks = [_encode_covariate(columns[s["column"]], s, source) for s in covariate_spec]
    covariates = torch.cat(blocks, 1) if blocks else torch.zeros(n, 0, dtype=torch.float64)
    return ComparisonRows(eye[index[0]] - eye[index[1]], _text(columns[user_col], user_col, source), covariates,
                          outcome)


def _is_number(value) -> bool:
    numeric = _as_numbers([value])
    return numeric is not None and not np.isnan(numeric[0])


def _encode_covariate(values: list, spec: dict, source: str) -> torch.Tensor:
    """(n, 1) numeric or (n, levels − 1) one-hot columns of one covariate, coded by ``spec``."""
    name = spec["column"]
    if spec["kind"] == "numeric":
        numeric = _as_numbers(values)
        if numeric is None or np.isnan(numeric).any():
            row = next(i for i, v in enumerate(values) if not _is_number(v))
            raise BadInput(f"row {row}: covariate '{name}' is {values[row]!r}, expected a number", source=source)
        return torch.as_tensor(numeric, dtype=torch.float64)[:, None]
    text = _text(values, name, source)
    levels = list(spec["levels"])
    unknown = [i for i, v in enumerate(text) if v not in levels]
    if unknown:
        raise BadInput(f"row {unknown[0]}: covariate '{name}' is {str(text[unknown[0]])!r}, a level the run never saw "
                       f"(levels: {levels})", source=source)
    return torch.from_numpy(np.stack([text == level for level in levels[1:]], 1).astype(np.float64)) \
        if len(levels) > 1 else torch.zeros(len(text), 0, dtype=torch.float64)
