"""What text the backbone reads: the (prompt, response) pair through the chat template, and the prompt alone.

With a chat template, the pair is ``[turns of the prompt…, assistant: response]`` and the prompt alone is the
same turns with the generation prompt appended, so its last token is the prompt/assistant boundary: the token
right before the assistant's first content token, whose hidden state is the router input e(x). Without a
template the pair is ``prompt\\n\\nresponse`` and the prompt alone is the prompt text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from bayesmicro.data.protocols.transcript import parse_transcript

PLAIN_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Text:
    """One string to embed; ``special`` says whether the tokenizer adds its own special tokens (BOS/CLS…)."""

    text: str
    special: bool


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def template_id(tokenizer) -> str:
    """Names the formatting in settings and cache keys: a hash of the chat template, or ``plain``."""
    if not has_chat_template(tokenizer):
        return "plain"
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = "\n".join(f"{k}:{v}" for k, v in sorted(template.items()))
    return "chat:" + hashlib.sha256(template.encode()).hexdigest()[:16]


def pair_text(tokenizer, prompt: str, response: str) -> Text:
    """The (prompt, response) pair as the backbone reads it; h(x, a) pools this."""
    if not has_chat_template(tokenizer):
        return Text(prompt + PLAIN_SEPARATOR + response, True)
    messages = parse_transcript(prompt) + [{"role": "assistant", "content": response}]
    return Text(tokenizer.apply_chat_template(messages, tokenize=False), False)


def prompt_text(tokenizer, prompt: str) -> Text:
    """The prompt up to the assistant turn's start; its last token is the boundary token of e(x)."""
    if not has_chat_template(tokenizer):
        return Text(prompt, True)
    return Text(tokenizer.apply_chat_template(parse_transcript(prompt), tokenize=False, add_generation_prompt=True),
                False)


def plain_text(text: str) -> Text:
    """Free text (a context criterion), tokenized as-is."""
    return Text(text, True)


def boundary_index(tokenizer, prompt: str, response: str) -> int:
    """Index, in the tokenized pair, of the prompt/assistant boundary token (the last token of the prompt text).

    Raises ValueError when the template does not render the pair as prompt text + response (then no token of
    the pair sequence sees exactly the prompt, and e(x) is taken from the prompt text alone).
    """
    if not has_chat_template(tokenizer):
        raise ValueError("no chat template: the prompt is embedded as plain text")
    pair = pair_text(tokenizer, prompt, response)
    head = prompt_text(tokenizer, prompt)
    pair_ids = tokenizer(pair.text, add_special_tokens=pair.special)["input_ids"]
    head_ids = tokenizer(head.text, add_special_tokens=head.special)["input_ids"]
    if pair_ids[: len(head_ids)] != head_ids:
        raise ValueError("the chat template does not render the pair as prompt + response")
    return len(head_ids) - 1

