"""Generic chat-format preference rows: ``chosen`` and ``rejected`` are message lists ``[{"role", "content"}, …]``
that share every turn but the last assistant turn (the response). The shared turns become the prompt in
``Human: … Assistant: …`` transcript form (``transcript.py``), which the embedder turns back into messages for a
chat template. Rows whose shared turns differ are dropped (counted in a warning).
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

from bayesmicro.data.pairs import PreferencePairs
from bayesmicro.data.protocols._common import read_split, require_columns, to_pairs
from bayesmicro.data.protocols.transcript import render_transcript
from bayesmicro.errors import BadInput

if TYPE_CHECKING:
    import datasets

PASS_THROUGH = ("context", "group", "user")


def _messages(value, row: int, column: str, source: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise BadInput(f"row {row}, column '{column}': expected a non-empty list of messages, got {value!r:.80}",
                       source=source)
    last = value[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        raise BadInput(f"row {row}, column '{column}': the last message must be the assistant's response",
                       source=source)
    return value


def pairs_from_messages(ds: datasets.Dataset, source: str) -> dict[str, list]:
    require_columns(ds, ("chosen", "rejected"), source)
    extra = [c for c in PASS_THROUGH if c in ds.column_names]
    columns: dict[str, list] = {k: [] for k in ("prompt", "chosen", "rejected", *extra)}
    dropped = 0
    for row, record in enumerate(ds):
        chosen = _messages(record["chosen"], row, "chosen", source)
        rejected = _messages(record["rejected"], row, "rejected", source)
        if chosen[:-1] != rejected[:-1]:
            dropped += 1
            continue
        if chosen[:-1]:
            prompt = render_transcript(chosen[:-1], source=f"{source} row {row}")
        elif isinstance(record.get("prompt"), str):
            prompt = record["prompt"]
        else:
            raise BadInput(f"row {row}: no turns before the response and no 'prompt' text", source=source)
        columns["prompt"].append(prompt)
        columns["chosen"].append(str(chosen[-1]["content"]))
        columns["rejected"].append(str(rejected[-1]["content"]))
        for column in extra:
            columns[column].append(record[column])
    if dropped:
        warnings.warn(f"{source}: dropped {dropped} row(s) whose chosen and rejected dialogues differ before "
                      "the last turn", stacklevel=2)
    return columns


def load(source: str | os.PathLike, limit: int | None = None, split: str = "train") -> PreferencePairs:
    """Chat-format rows from a local file/folder or a hub id."""
    if source is None:
        raise BadInput("the 'chat' protocol needs a source (a file, folder or hub id)")
    return to_pairs(pairs_from_messages(read_split(source, str(source), split), str(source)), str(source), limit)
