"""Anthropic HH-RLHF (``Anthropic/hh-rlhf``, helpful-base and harmless-base): one pair per row.

The response is the last assistant turn; the dialogue before it is the prompt, in ``Human: … Assistant: …``
transcript form; the subset is the ``group``. Reads the hub rows (``chosen``/``rejected`` full transcripts) or a
local file in either that schema or the prepared ``prompt``/``chosen``/``rejected``/``subset`` schema (the shared
``hh_rlhf_helpful_harmless.jsonl.gz``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from bayesmicro.data.pairs import PreferencePairs, is_local
from bayesmicro.data.protocols._common import read_hub_split, read_split, require_columns, to_pairs
from bayesmicro.errors import BadInput

if TYPE_CHECKING:
    import datasets

HUB_ID = "Anthropic/hh-rlhf"
SUBSETS = ("helpful-base", "harmless-base")
_ASSISTANT = "\n\nAssistant:"


def split_dialogue(transcript: str, row: int, column: str, source: str) -> tuple[str, str]:
    """``"\\n\\nHuman: q\\n\\nAssistant: a"`` → (``"Human: q"``, ``"a"``): everything before the last assistant turn."""
    cut = transcript.rfind(_ASSISTANT)
    if cut < 0:
        raise BadInput(f"row {row}, column '{column}': no '\\n\\nAssistant:' turn in the transcript", source=source)
    return transcript[:cut].strip(), transcript[cut + len(_ASSISTANT):].strip()


def _from_transcripts(ds: datasets.Dataset, group: str | None, source: str, columns: dict[str, list]) -> None:
    require_columns(ds, ("chosen", "rejected"), source)
    groups = ds["subset"] if group is None and "subset" in ds.column_names else None
    for row, (chosen, rejected) in enumerate(zip(ds["chosen"], ds["rejected"])):
        prompt, chosen_reply = split_dialogue(chosen, row, "chosen", source)
        other_prompt, rejected_reply = split_dialogue(rejected, row, "rejected", source)
        if prompt != other_prompt:
            continue  # a handful of hub rows differ before the last turn: not a pair on one prompt
        columns["prompt"].append(prompt)
        columns["chosen"].append(chosen_reply)
        columns["rejected"].append(rejected_reply)
        columns["group"].append(group if group is not None else (groups[row] if groups else "hh-rlhf"))


def load(source: str | os.PathLike | None = None, limit: int | None = None, split: str = "test",
         subsets: tuple[str, ...] = SUBSETS) -> PreferencePairs:
    """HH-RLHF pairs with ``group`` = subset. ``source``: a local file, or a hub id (default ``Anthropic/hh-rlhf``)."""
    columns: dict[str, list] = {"prompt": [], "chosen": [], "rejected": [], "group": []}
    name = str(source) if source is not None else HUB_ID
    if source is not None and is_local(source):
        ds = read_split(source, HUB_ID, split)
        if "prompt" in ds.column_names:
            require_columns(ds, ("prompt", "chosen", "rejected"), name)
            columns = {"prompt": ds["prompt"], "chosen": ds["chosen"], "rejected": ds["rejected"],
                       "group": ds["subset"] if "subset" in ds.column_names else ["hh-rlhf"] * len(ds)}
        else:
            _from_transcripts(ds, None, name, columns)
    else:
        for subset in subsets:
            _from_transcripts(read_hub_split(name, split, data_dir=subset), subset, f"{name}/{subset}", columns)
    return to_pairs(columns, name, limit)
