"""A small stand-alone response embedder: a transformers backbone, its chat template, last-token or mean pooling.

It renders text the way ``bayesmicro.embed`` does (pair = ``[user: prompt, assistant: response]`` through the chat
template, prompt = the same turns with the generation prompt; without a template ``prompt\\n\\nresponse`` and the
prompt alone) and pools the last non-pad token (``last``) or the mean over tokens (``mean``). The reward function
uses ``bayesmicro.embed.Embedder`` when that package provides it and falls back to this class, so integrations work
with nothing but transformers. No disk cache: completions in RLHF are new every step.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from transformers import AutoModel, AutoTokenizer

from bayesmicro.embed.pooling import pool as pool_by
from bayesmicro.errors import BadInput

POOLINGS = ("last", "mean")
PLAIN_SEPARATOR = "\n\n"


def template_id(tokenizer) -> str:
    """``plain`` or ``chat:`` + a hash of the chat template (the same naming as ``bayesmicro.embed``)."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return "plain"
    if isinstance(template, dict):
        template = "\n".join(f"{k}:{v}" for k, v in sorted(template.items()))
    return "chat:" + hashlib.sha256(template.encode()).hexdigest()[:16]


class BackboneEmbedder:
    """``embed_responses(prompts, responses)`` → (n, d) h(x, a); ``embed_prompts(prompts)`` → (n, d) e(x);
    ``embed_texts(texts)`` → (n, d) plain-text features (contexts). All float32 on the CPU."""

    def __init__(self, model: str, pooling: str = "last", max_length: int = 512, batch_size: int = 16,
                 device: str = "cpu", revision: str | None = None, local_files_only: bool = False):
        if pooling not in POOLINGS:
            raise BadInput(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        kwargs = {"revision": revision, "local_files_only": local_files_only}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
            self.model = AutoModel.from_pretrained(model, **kwargs).to(device).eval()
        except OSError as exc:
            raise BadInput(f"cannot load the backbone ({str(exc).splitlines()[0]})", source=model) from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.name, self.revision, self.pooling = model, revision, pooling
        self.max_length, self.batch_size, self.device = max_length, batch_size, torch.device(device)

    def settings(self) -> dict[str, Any]:
        return {"model": self.name, "revision": self.revision, "pooling": self.pooling,
                "template": template_id(self.tokenizer), "max_length": self.max_length}

    @property
    def has_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def pair_text(self, prompt: str, response: str) -> tuple[str, bool]:
        if not self.has_template:
            return prompt + PLAIN_SEPARATOR + response, True
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False), False

    def prompt_text(self, prompt: str) -> tuple[str, bool]:
        if not self.has_template:
            return prompt, True
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True), False

    def embed_responses(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        if len(prompts) != len(responses):
            raise BadInput(f"{len(prompts)} prompts but {len(responses)} responses (expected one per prompt)")
        return self._embed([self.pair_text(p, r) for p, r in zip(prompts, responses)])

    def embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        return self._embed([self.prompt_text(p) for p in prompts])

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self._embed([(t, True) for t in texts])

    @torch.no_grad()
    def _embed(self, items: list[tuple[str, bool]]) -> torch.Tensor:
        out = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            rows = []
            for text, special in chunk:  # one sequence per call: special-token handling may differ per item
                rows.append(self.tokenizer(text, add_special_tokens=special, truncation=True,
                                           max_length=self.max_length)["input_ids"])
            batch = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt", padding=True)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            hidden = self.model(**batch).last_hidden_state
            out.append(pool(hidden, batch["attention_mask"], self.pooling).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.model.config.hidden_size)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(b, L, d) hidden states, (b, L) mask → (b, d) float32: the last non-pad token or the mean over tokens."""
    return pool_by(hidden, attention_mask, pooling)
