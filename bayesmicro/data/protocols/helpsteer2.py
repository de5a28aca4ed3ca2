"""HelpSteer2 (``nvidia/HelpSteer2``) per attribute, as in the MiCRo paper.

Responses to the same prompt are paired; for each of the five attributes the higher-rated response is chosen,
ties are dropped; the attribute is the ``group`` and its criterion sentence the ``context``. In the training
split, response pairs on which all five attributes agree (every attribute strictly prefers the same response)
are removed: they carry no signal about whose preference it is. The validation split is the test set
(``split`` = "test") and keeps every pair.
"""

from __future__ import annotations

import os
from itertools import combinations
from typing import TYPE_CHECKING

from bayesmicro.data.pairs import PreferencePairs
from bayesmicro.data.protocols._common import read_split, require_columns, to_pairs

if TYPE_CHECKING:
    import datasets

HUB_ID = "nvidia/HelpSteer2"
ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
# One-sentence criteria per attribute, written from the HelpSteer2 attribute definitions (the dataset card);
# they paraphrase, not quote, the MiCRo paper's Table 6.
CONTEXTS = {
    "helpfulness": "Prefer the response that is more helpful overall in answering the prompt.",
    "correctness": "Prefer the response that includes all pertinent facts without errors.",
    "coherence": "Prefer the response that is more consistent and clear in its expression.",
    "complexity": "Prefer the response that shows more intellectual depth, beyond basic language competency.",
    "verbosity": "Prefer the response that gives more detail relative to what the prompt asks for.",
}
SPLITS = {"train": "train", "validation": "test"}


def pairs_from_ratings(ds: datasets.Dataset, drop_agreeing: bool, source: str) -> dict[str, list]:
    """Per-attribute pairs from rated responses (rows: prompt, response, one int column per attribute)."""
    require_columns(ds, ("prompt", "response", *ATTRIBUTES), source)
    by_prompt: dict[str, list[dict]] = {}
    for row in ds:
        by_prompt.setdefault(row["prompt"], []).append(row)
    columns: dict[str, list] = {"prompt": [], "chosen": [], "rejected": [], "context": [], "group": []}
    for prompt, rows in by_prompt.items():
        for first, second in combinations(rows, 2):
            diffs = {a: float(second[a]) - float(first[a]) for a in ATTRIBUTES}
            if drop_agreeing and (all(d > 0 for d in diffs.values()) or all(d < 0 for d in diffs.values())):
                continue
            for attribute, diff in diffs.items():
                if diff == 0:
                    continue
                better, worse = (second, first) if diff > 0 else (first, second)
                columns["prompt"].append(prompt)
                columns["chosen"].append(better["response"])
                columns["rejected"].append(worse["response"])
                columns["context"].append(CONTEXTS[attribute])
                columns["group"].append(attribute)
    return columns


def load(source: str | os.PathLike | None = None, limit: int | None = None,
         splits: tuple[str, ...] = ("train", "validation")) -> PreferencePairs:
    """Pairs of the given HelpSteer2 splits with a ``split`` column (train / test = validation).

    ``source``: a local folder holding ``train.jsonl.gz`` / ``validation.jsonl.gz`` (the hub repo's layout), a single
    file (read as the first of ``splits``), or a hub id (default ``nvidia/HelpSteer2``).
    """
    name = str(source) if source is not None else HUB_ID
    single_file = source is not None and os.path.isfile(source)
    columns: dict[str, list] = {}
    for split in splits[:1] if single_file else splits:
        ds = read_split(source, HUB_ID, split)
        part = pairs_from_ratings(ds, drop_agreeing=split == "train", source=name)
        part["split"] = [SPLITS.get(split, split)] * len(part["prompt"])
        for key, values in part.items():
            columns.setdefault(key, []).extend(values)
    return to_pairs(columns, name, limit)
