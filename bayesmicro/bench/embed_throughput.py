"""Embedding throughput: a naive loop (one example per forward pass, the official code's evaluation loop) against
bayesmicro's extraction (length-sorted batches, ``inference_mode``, each distinct text once), on the same texts.

A decoder is built from a config with random weights (throughput does not depend on weight values): Llama-3.2-1B-sized
in bf16 on a GPU, a small Llama (3.9 M non-embedding parameters) in fp32 on CPU. Texts are (prompt, chosen) pairs of
the shared HH-RLHF file when it is there (else seeded random word strings of HH-like lengths) through a chat template.
Reports tokens/s and achieved TFLOP/s = 2 × non-embedding parameters × tokens / s (the embedding lookup is not a
matmul), and the largest difference between the two feature sets relative to the largest feature.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bayesmicro.embed.backbone import compute_dtype, default_model_path, pick_device
from bayesmicro.embed.pooling import pool
from bayesmicro.errors import BadInput

HH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hh_rlhf_helpful_harmless.jsonl.gz"
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
SIZES = {  # Llama-3.2-1B: hidden 2048, 16 layers, 32 heads (8 KV), MLP 8192, vocab 128256
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256),
    "small": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, vocab_size=None),
}
DEFAULTS = {"cuda": {"size": "1b", "texts": 2000, "batch_size": 64},
            "cpu": {"size": "small", "texts": 48, "batch_size": 16}}


def build_model(folder: Path, size: str, dtype: torch.dtype) -> int:
    """Save a tokenizer (MiniLM WordPiece + role tokens + chat template) and a random Llama of ``size`` into
    ``folder``; return its non-embedding parameter count."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    tokenizer = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    spec = dict(SIZES[size])
    spec["vocab_size"] = max(spec["vocab_size"] or 0, len(tokenizer))
    config = LlamaConfig(**spec, max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaModel(config).to(dtype)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)


def sample_texts(n: int) -> tuple[list[str], list[str], str]:
    """``n`` (prompt, response) pairs: the shared HH-RLHF file's first-seeded ``n`` chosen pairs when present, else
    seeded random word strings (prompts 20–80 words, responses 20–120). Returns prompts, responses, source."""
    if HH.exists():
        from bayesmicro.data.protocols import load_protocol

        pairs = load_protocol("hh_rlhf", HH, limit=n)
        return list(pairs["prompt"]), list(pairs["chosen"]), str(HH)
    rng = random.Random(0)
    words = "the a of to and in is it that for on with as you this be are or by not what how can".split()

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))

    prompts = [f"Human: {text(20, 80)}" for _ in range(n)]
    return prompts, [text(20, 120) for _ in range(n)], "<random words>"


def naive(folder: Path, texts, device: torch.device, dtype: torch.dtype,
          max_length: int) -> tuple[torch.Tensor, int, float]:
    """One example per forward pass, no sorting, no batching: (features (n, d), tokens, seconds)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.truncation_side = "left"
    model = AutoModel.from_pretrained(folder, dtype=dtype, local_files_only=True).to(device).eval()
    out, tokens = [], 0
    with torch.inference_mode():
        model(**tokenizer(texts[0].text, add_special_tokens=False, return_tensors="pt").to(device))  # warm-up
        sync(device)
        start = time.perf_counter()
        for text in texts:
            ids = tokenizer(text.text, add_special_tokens=False, truncation=True, max_length=max_length,
                            return_tensors="pt").to(device)
            hidden = model(**ids).last_hidden_state
            out.append(pool(hidden, ids["attention_mask"], "last").cpu())
            tokens += ids["input_ids"].shape[1]
        sync(device)
    return torch.cat(out), tokens, time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def library(folder: Path, prompts: list[str], responses: list[str], device: torch.device, batch_size: int,
            max_length: int) -> tuple[torch.Tensor, int, float, list]:
    """bayesmicro's ``Embedder`` on the same pairs with an empty in-memory cache (no hits), after a warm-up:
    (features (n, d), tokens, seconds, the templated texts)."""
    from bayesmicro.embed import Embedder
    from bayesmicro.embed.template import pair_text

    with tempfile.TemporaryDirectory() as tmp:
        embedder = Embedder(str(folder), device=str(device), batch_size=batch_size, max_length=max_length,
                            cache_dir=tmp)
        texts = [pair_text(embedder.tokenizer, p, a) for p, a in zip(prompts, responses)]
        embedder.embed_responses(prompts[:2], responses[:2])  # warm-up (load, first kernels)
        embedder.cache = type(embedder.cache)(None, embedder.settings())  # fresh in-memory cache: no hits
        start = time.perf_counter()
        fast = embedder.embed_responses(prompts, responses)
        sync(device)
        seconds = time.perf_counter() - start
        return fast, embedder.last_stats["tokens"], seconds, texts


def measure(device: str = "auto", size: str = "auto", n_texts: int | None = None, batch_size: int | None = None,
            max_length: int = 1024) -> dict[str, Any]:
    """Naive vs library on ``n_texts`` pairs; the defaults follow the device (``DEFAULTS``)."""
    dev = pick_device(device)
    defaults = DEFAULTS["cuda" if dev.type == "cuda" else "cpu"]
    size = defaults["size"] if size == "auto" else size
    if size not in SIZES:
        raise BadInput(f"size must be auto or one of {sorted(SIZES)}, got {size!r}")
    n = n_texts or defaults["texts"]
    batch_size = batch_size or defaults["batch_size"]
    dtype = compute_dtype(dev)
    prompts, responses, source = sample_texts(n)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        params = build_model(folder, size, dtype)
        fast, fast_tokens, fast_seconds, texts = library(folder, prompts, responses, dev, batch_size, max_length)
        base, base_tokens, base_seconds = naive(folder, texts, dev, dtype, max_length)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    result: dict[str, Any] = {"device": name, "size": size, "dtype": str(dtype).removeprefix("torch."),
                              "non_embedding_params": params, "texts": len(texts), "text_source": source,
                              "batch_size": batch_size, "max_length": max_length}
    for key, tokens, seconds in (("naive", base_tokens, base_seconds), ("library", fast_tokens, fast_seconds)):
        result[key] = {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds,
                       "tflops": 2 * params * tokens / seconds / 1e12}
    result["speedup"] = result["library"]["tokens_per_second"] / result["naive"]["tokens_per_second"]
    scale = base.float().abs().max().item()
    result["max_abs_diff_relative"] = (fast - base.float()).abs().max().item() / max(scale, 1e-12)
    return result


def markdown(result: dict[str, Any]) -> str:
    """The throughput table with a sentence on what was measured."""
    from bayesmicro.bench.report import markdown_table

    rows = [{"method": key, "tokens": result[key]["tokens"], "seconds": result[key]["seconds"],
             "tokens/s": result[key]["tokens_per_second"], "TFLOP/s": result[key]["tflops"]}
            for key in ("naive", "library")]
    text = (f"{result['texts']:,} (prompt, chosen) texts from `{Path(result['text_source']).name}` on "
            f"{result['device']}: a random Llama built from a config ({result['size']}: "
            f"{result['non_embedding_params'] / 1e6:.1f} M non-embedding parameters, {result['dtype']}), max length "
            f"{result['max_length']}, library batch size {result['batch_size']}. naive = one example per forward "
            f"pass; library = `bayesmicro.embed.Embedder` (length-sorted batches, empty cache). TFLOP/s = 2 × "
            f"non-embedding parameters × tokens / s. Library / naive: **{result['speedup']:.2f}×**; largest feature "
            f"difference {result['max_abs_diff_relative']:.1e} of the largest feature.")
    return text + "\n\n" + markdown_table(rows, ["method", "tokens", "seconds", "tokens/s", "TFLOP/s"], digits=4)


__all__ = ["DEFAULTS", "SIZES", "build_model", "library", "markdown", "measure", "naive", "sample_texts"]
