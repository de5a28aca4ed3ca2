"""Embedding throughput on the same texts, in one run: a naive loop (one example per forward pass, the official code's
evaluation loop), a reference loop (plain PyTorch: texts sorted by length, padded batches of about
``reference_tokens`` tokens, ``inference_mode``) and bayesmicro's extraction (token-budget batches, sequence packing,
no per-batch synchronisation, tokenization overlapped; see ``bayesmicro.embed.extract``).

A decoder is built from a config with random weights (throughput does not depend on weight values): Llama-3.2-1B-sized
in bf16 on a GPU, a small Llama (3.9 M non-embedding parameters) in fp32 on CPU. Texts are (prompt, chosen) pairs of
the shared HH-RLHF file when it is there (else seeded random word strings of HH-like lengths) through a chat template.
Reports tokens/s and achieved TFLOP/s = 2 × non-embedding parameters × tokens / s (the embedding lookup is not a
matmul) for each, the share of the matmul peak measured on the same device (a large square matmul in the compute
dtype), and the largest difference between feature sets relative to the largest feature. Every timing includes
tokenization and excludes the model load (each path is warmed up first).
"""

from __future__ import annotations

import os
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
DEFAULTS = {"cuda": {"size": "1b", "texts": 1000, "reference_tokens": 16384},
            "cpu": {"size": "small", "texts": 48, "reference_tokens": 1024}}
METHODS = ("naive", "reference", "library")


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
    seeded random word strings (prompts 20–80 words, responses 20–120). Returns prompts, responses, source.
    ``$BAYESMICRO_HH_DATA`` names another copy of the HH-RLHF file (a machine without the shared folder)."""
    hh = Path(os.environ.get("BAYESMICRO_HH_DATA") or HH)
    if hh.exists():
        from bayesmicro.data.protocols import load_protocol

        pairs = load_protocol("hh_rlhf", hh, limit=n)
        return list(pairs["prompt"]), list(pairs["chosen"]), str(hh)
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


def reference(folder: Path, texts, device: torch.device, dtype: torch.dtype, max_length: int,
              max_tokens: int) -> tuple[torch.Tensor, int, float]:
    """A plain PyTorch loop: tokenize, sort by length (longest first), padded batches of at most ``max_tokens``
    padded tokens, ``inference_mode``, last-token pooling, one copy to the host per batch: (features, tokens, s)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.truncation_side, tokenizer.padding_side = "left", "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModel.from_pretrained(folder, dtype=dtype, local_files_only=True).to(device).eval()

    def run(batch_ids: list[list[int]]) -> torch.Tensor:
        batch = tokenizer.pad({"input_ids": batch_ids}, return_tensors="pt").to(device)
        hidden = model(**batch, use_cache=False).last_hidden_state
        return pool(hidden, batch["attention_mask"], "last").cpu()

    with torch.inference_mode():
        run([tokenizer(texts[0].text, add_special_tokens=False)["input_ids"]])  # warm-up
        sync(device)
        start = time.perf_counter()
        ids = tokenizer([t.text for t in texts], add_special_tokens=False, truncation=True,
                        max_length=max_length)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out: list[torch.Tensor | None] = [None] * len(ids)
        batch: list[int] = []
        for i in order + [None]:
            if batch and (i is None or len(ids[batch[0]]) * (len(batch) + 1) > max_tokens):
                for j, row in zip(batch, run([ids[j] for j in batch])):
                    out[j] = row
                batch = []
            if i is not None:
                batch.append(i)
        sync(device)
        seconds = time.perf_counter() - start
    return torch.stack(out), sum(len(x) for x in ids), seconds


def library(folder: Path, prompts: list[str], responses: list[str], device: torch.device, batch_size: int | None,
            max_length: int, max_batch_tokens: int | None = None) -> tuple[torch.Tensor, int, float, list, dict]:
    """bayesmicro's ``Embedder`` on the same pairs with an empty in-memory cache (no hits), after a warm-up:
    (features (n, d), tokens, seconds, the templated texts, its stats)."""
    from bayesmicro.embed import Embedder
    from bayesmicro.embed.template import pair_text

    with tempfile.TemporaryDirectory() as tmp:
        embedder = Embedder(str(folder), device=str(device), batch_size=batch_size, max_length=max_length,
                            cache_dir=tmp, max_batch_tokens=max_batch_tokens)
        texts = [pair_text(embedder.tokenizer, p, a) for p, a in zip(prompts, responses)]
        embedder.embed_responses(prompts[:2], responses[:2])  # warm-up (load, probe, first kernels)
        embedder.cache = type(embedder.cache)(None, embedder.settings())  # fresh in-memory cache: no hits
        start = time.perf_counter()
        fast = embedder.embed_responses(prompts, responses)
        sync(device)
        seconds = time.perf_counter() - start
        return fast, embedder.last_stats["tokens"], seconds, texts, embedder.last_stats


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """TFLOP/s of a large square matmul in ``dtype`` on ``device`` (best of the timed repeats)."""
    n, repeats = (8192, 20) if device.type == "cuda" else (512, 5)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e12


def measure(device: str = "auto", size: str = "auto", n_texts: int | None = None, batch_size: int | None = None,
            max_length: int = 1024, max_batch_tokens: int | None = None, reference_tokens: int | None = None,
            model: tuple[Path, int] | None = None) -> dict[str, Any]:
    """Naive, reference and library on ``n_texts`` pairs; the defaults follow the device (``DEFAULTS``). ``model``:
    a folder ``build_model`` wrote and its parameter count, to time several settings on one model."""
    dev = pick_device(device)
    defaults = DEFAULTS["cuda" if dev.type == "cuda" else "cpu"]
    size = defaults["size"] if size == "auto" else size
    if size not in SIZES:
        raise BadInput(f"size must be auto or one of {sorted(SIZES)}, got {size!r}")
    n = n_texts or defaults["texts"]
    reference_tokens = reference_tokens or defaults["reference_tokens"]
    dtype = compute_dtype(dev)
    prompts, responses, source = sample_texts(n)
    with tempfile.TemporaryDirectory() as tmp:
        folder, params = model or (Path(tmp) / "model", None)
        params = params or build_model(folder, size, dtype)
        fast, fast_tokens, fast_seconds, texts, stats = library(folder, prompts, responses, dev, batch_size,
                                                                max_length, max_batch_tokens)
        ref, ref_tokens, ref_seconds = reference(folder, texts, dev, dtype, max_length, reference_tokens)
        base, base_tokens, base_seconds = naive(folder, texts, dev, dtype, max_length)
    peak = matmul_peak(dev, dtype)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    result: dict[str, Any] = {"device": name, "size": size, "dtype": str(dtype).removeprefix("torch."),
                              "non_embedding_params": params, "texts": len(texts), "text_source": source,
                              "batch_size": batch_size, "max_length": max_length, "batching": stats["batching"],
                              "max_batch_tokens": stats["max_batch_tokens"], "reference_tokens": reference_tokens,
                              "matmul_peak_tflops": peak}
    for key, tokens, seconds in (("naive", base_tokens, base_seconds), ("reference", ref_tokens, ref_seconds),
                                 ("library", fast_tokens, fast_seconds)):
        tflops = 2 * params * tokens / seconds / 1e12
        result[key] = {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds,
                       "tflops": tflops, "share_of_peak": tflops / peak}
    result["speedup"] = result["library"]["tokens_per_second"] / result["naive"]["tokens_per_second"]
    result["library_vs_reference"] = (result["library"]["tokens_per_second"]
                                      / result["reference"]["tokens_per_second"])
    scale = max(base.float().abs().max().item(), 1e-12)
    result["max_abs_diff_relative"] = (fast - base.float()).abs().max().item() / scale
    result["reference_max_abs_diff_relative"] = (ref.float() - base.float()).abs().max().item() / scale
    return result


def markdown(result: dict[str, Any]) -> str:
    """The throughput table with a sentence on what was measured."""
    from bayesmicro.bench.report import markdown_table

    rows = [{"method": key, "tokens": result[key]["tokens"], "seconds": result[key]["seconds"],
             "tokens/s": result[key]["tokens_per_second"], "TFLOP/s": result[key]["tflops"],
             "% of peak": 100 * result[key]["share_of_peak"]} for key in METHODS]
    text = (f"{result['texts']:,} (prompt, chosen) texts from `{Path(result['text_source']).name}` on "
            f"{result['device']}: a random Llama built from a config ({result['size']}: "
            f"{result['non_embedding_params'] / 1e6:.1f} M non-embedding parameters, {result['dtype']}), max length "
            f"{result['max_length']}. naive = one example per forward pass; reference = plain PyTorch, texts sorted "
            f"by length, padded batches of ≤ {result['reference_tokens']:,} tokens; library = "
            f"`bayesmicro.embed.Embedder` ({result['batching']} batches of ≤ {result['max_batch_tokens']:,} tokens, "
            f"empty cache). TFLOP/s = 2 × non-embedding parameters × tokens / s; peak = a large {result['dtype']} "
            f"matmul on the same device, {result['matmul_peak_tflops']:.3g} TFLOP/s. Library / naive: "
            f"**{result['speedup']:.2f}×**, library / reference: **{result['library_vs_reference']:.2f}×**; largest "
            f"feature difference to naive {result['max_abs_diff_relative']:.1e} (library), "
            f"{result['reference_max_abs_diff_relative']:.1e} (reference) of the largest feature.")
    return text + "\n\n" + markdown_table(rows, ["method", "tokens", "seconds", "tokens/s", "TFLOP/s", "% of peak"],
                                           digits=4)


__all__ = ["DEFAULTS", "METHODS", "SIZES", "build_model", "library", "markdown", "matmul_peak", "measure", "naive",
           "reference", "sample_texts"]
