"""Reasonable Preference Reversal (``microsoft/rpr``): each row yields two pairs with reversed labels.

Under ``criteria_x`` response_a is preferred, under ``criteria_y`` response_b (the dataset's construction);
the criterion is the ``context`` and its category (``category_x`` / ``category_y``) the ``group``.
"""

from __future__ import annotations

import os

from bayesmicro.data.pairs import PreferencePairs
from bayesmicro.data.protocols._common import read_split, require_columns, to_pairs

HUB_ID = "microsoft/rpr"
COLUMNS = ("prompt", "response_a", "response_b", "criteria_x", "criteria_y", "category_x", "category_y")


def load(source: str | os.PathLike | None = None, limit: int | None = None,
         splits: tuple[str, ...] = ("train", "test")) -> PreferencePairs:
    """Two pairs per row, with a ``split`` column. ``source``: a local file (read as the first of ``splits``),
    a folder with ``train*``/``test*`` files (e.g. the repo's ``data/train-00000-of-00001.parquet``) or a hub id."""
    name = str(source) if source is not None else HUB_ID
    single_file = source is not None and os.path.isfile(source)
    columns: dict[str, list] = {k: [] for k in ("prompt", "chosen", "rejected", "context", "group", "split")}
    for split in splits[:1] if single_file else splits:
        ds = read_split(source, HUB_ID, split)
        require_columns(ds, COLUMNS, name)
        for row in ds:
            for chosen, rejected, criterion, category in (("response_a", "response_b", "criteria_x", "category_x"),
                                                          ("response_b", "response_a", "criteria_y", "category_y")):
                columns["prompt"].append(row["prompt"])
                columns["chosen"].append(row[chosen])
                columns["rejected"].append(row[rejected])
                columns["context"].append(row[criterion])
                columns["group"].append(row[category])
                columns["split"].append(split)
    return to_pairs(columns, name, limit)
