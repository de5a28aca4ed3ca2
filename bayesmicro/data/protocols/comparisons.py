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
    covariates, names = _covariates(columns, context_cols, keep, source)
    user = None if user_col is None else _text(columns[user_col], user_col, source)[keep]
    return EmbeddedPairs(
        chosen=eye[winner], rejected=eye[loser], prompt=covariates, user=user,
        meta={"protocol": "comparisons", "items": items, "reference_item": items[-1], "covariates": names,
              "ties_dropped": int((~keep).sum())},
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
            raise BadInput(f"row {row}: '{column}' is {value!r}, expected +1 (item1 preferred), -1 (item2) or "
                           "0 (no preference)", source=source)
        out[row] = int(number)
    return out


def _covariates(columns: dict[str, list], names: Sequence[str], keep: np.ndarray,
                source: str) -> tuple[torch.Tensor, list[str]]:
    """(n_kept, p) router covariates: numeric as is, text one-hot without its first level."""
    blocks, out_names = [], []
    for name in names:
        values = columns[name]
        if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in values):
            row = next(i for i, v in enumerate(values) if v is None or (isinstance(v, float) and np.isnan(v)))
            raise BadInput(f"row {row}: covariate '{name}' is empty", source=source)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            blocks.append(torch.as_tensor(np.asarray(values, dtype=np.float64)[keep], dtype=torch.float32)[:, None])
            out_names.append(name)
            continue
        text = np.asarray([str(v) for v in values])[keep]
        levels = sorted(set(text.tolist()))
        for level in levels[1:]:
            blocks.append(torch.from_numpy((text == level).astype(np.float32))[:, None])
            out_names.append(f"{name}={level}")
    n = int(keep.sum())
    return (torch.cat(blocks, 1) if blocks else torch.zeros(n, 0)), out_names
