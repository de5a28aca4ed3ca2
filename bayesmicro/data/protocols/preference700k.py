"""preference-700K (``hendrydong/preference_700K``): chat-format rows, used for large-scale stage-1 training."""

from __future__ import annotations

import os

from bayesmicro.data.pairs import PreferencePairs
from bayesmicro.data.protocols import chat

HUB_ID = "hendrydong/preference_700K"


def load(source: str | os.PathLike | None = None, limit: int | None = None, split: str = "train") -> PreferencePairs:
    """``source``: a local file/folder in the hub schema, or a hub id (default ``hendrydong/preference_700K``)."""
    return chat.load(source if source is not None else HUB_ID, limit=limit, split=split)
