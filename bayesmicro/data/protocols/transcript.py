"""Dialogues as text: the ``Human: … Assistant: …`` transcript form every protocol stores in the ``prompt`` column.

A multi-turn prompt is a string in PreferencePairs; this module is the one place that renders message lists to it
and parses it back, so the embedder can hand the turns to a tokenizer's chat template.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from bayesmicro.errors import BadInput

ROLE_TO_SPEAKER = {"user": "Human", "assistant": "Assistant", "system": "System"}
SPEAKER_TO_ROLE = {speaker: role for role, speaker in ROLE_TO_SPEAKER.items()}
_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant|System): ?")


def render_transcript(messages: Sequence[dict[str, Any]], source: str = "<messages>") -> str:
    """``[{"role": "user", "content": "hi"}, …]`` → ``"Human: hi\\n\\nAssistant: …"``."""
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise BadInput(f"message {i}: expected {{'role': ..., 'content': ...}}, got {message!r:.80}", source=source)
        role = message["role"]
        if role not in ROLE_TO_SPEAKER:
            raise BadInput(f"message {i}: role {role!r}, expected one of {sorted(ROLE_TO_SPEAKER)}", source=source)
        turns.append(f"{ROLE_TO_SPEAKER[role]}: {str(message['content']).strip()}")
    return "\n\n".join(turns)


def parse_transcript(text: str) -> list[dict[str, str]]:
    """Inverse of :func:`render_transcript`; text that is not a transcript is one user message."""
    stripped = text.strip()
    if not _TURN.match(stripped):
        return [{"role": "user", "content": text}]
    parts = _TURN.split(stripped)
    # parts = ["", speaker, content, speaker, content, ...]
    return [{"role": SPEAKER_TO_ROLE[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]
