"""Embedding throughput: a naive loop (one example per forward pass) vs bayesmicro's extraction, same texts.

A decoder is built from a config with random weights (throughput does not depend on weight values):
Llama-3.2-1B-sized in bf16 on a GPU, a small Llama on CPU. Texts are (prompt, chosen) pairs of the shared
HH-RLHF file through a chat template. Reports tokens/s and achieved TFLOP/s = 2 × non-embedding parameters ×
tokens / s (the embedding lookup is not a matmul), plus the largest difference between the two feature sets.

    python benchmarks/embed_throughput.py [--size auto|1b|small] [--pairs N] [--device auto|cpu|cuda] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bayesmicro.data.protocols import load_protocol  # noqa: E402
from bayesmicro.embed import Embedder, default_model_path  # noqa: E402
from bayesmicro.embed.backbone import compute_dtype, pick_device  # noqa: E402
from bayesmicro.embed.pooling import pool  # noqa: E402
from bayesmicro.embed.template import pair_text  # noqa: E402

HH = ROOT.parent / "shared" / "data" / "hh_rlhf_helpful_harmless.jsonl.gz"
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
SIZES = {  # Llama-3.2-1B: hidden 2048, 16 layers, 32 heads (8 KV), MLP 8192, vocab 128256
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256),
    "small": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, vocab_size=None),
}


def build_model(folder: Path, size: str, dtype: torch.dtype) -> int:
    """Save tokenizer (MiniLM WordPiece + role tokens + chat template) and a random Llama; return non-embedding params."""
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


def naive(folder: Path, texts, device: torch.device, dtype: torch.dtype, max_length: int):
    """One example per forward pass, no sorting, no batching: the official code's evaluation loop."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.truncation_side = "left"
    model = AutoModel.from_pretrained(folder, dtype=dtype, local_files_only=True).to(device).eval()
    out, tokens = [], 0
    with torch.inference_mode():
        model(**tokenizer(texts[0].text, add_special_tokens=False, return_tensors="pt").to(device))  # warm-up
        _sync(device)
        start = time.perf_counter()
        for text in texts:
            ids = tokenizer(text.text, add_special_tokens=False, truncation=True, max_length=max_length,
                            return_tensors="pt").to(device)
            hidden = model(**ids).last_hidden_state
            out.append(pool(hidden, ids["attention_mask"], "last").cpu())
            tokens += ids["input_ids"].shape[1]
        _sync(device)
    return torch.cat(out), tokens, time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="auto", choices=["auto", "1b", "small"])
    parser.add_argument("--pairs", type=int, default=None, help="texts to embed (default 2000 GPU, 300 CPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="library batch size (default 64 GPU, 16 CPU)")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = pick_device(args.device)
    gpu = device.type == "cuda"
    size = args.size if args.size != "auto" else ("1b" if gpu else "small")
    n = args.pairs or (2000 if gpu else 300)
    batch_size = args.batch_size or (64 if gpu else 16)
    dtype = compute_dtype(device)
    pairs = load_protocol("hh_rlhf", HH, limit=n)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        params = build_model(folder, size, dtype)
        embedder = Embedder(str(folder), device=str(device), batch_size=batch_size, max_length=args.max_length,
                            cache_dir=str(Path(tmp) / "cache"))
        texts = [pair_text(embedder.tokenizer, p, a) for p, a in zip(pairs["prompt"], pairs["chosen"])]
        base, base_tokens, base_seconds = naive(folder, texts, device, dtype, embedder.max_length)
        embedder.embed_responses(pairs["prompt"][:2], pairs["chosen"][:2])  # warm-up (load, first kernels)
        embedder.cache = type(embedder.cache)(None, embedder.settings())  # fresh in-memory cache: no hits
        start = time.perf_counter()
        fast = embedder.embed_responses(pairs["prompt"], pairs["chosen"])
        _sync(device)
        fast_seconds = time.perf_counter() - start
        fast_tokens = embedder.last_stats["tokens"]
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    result = {"device": name, "size": size, "dtype": str(dtype).removeprefix("torch."),
              "non_embedding_params": params, "texts": len(texts), "batch_size": batch_size}
    for key, tokens, seconds in (("naive", base_tokens, base_seconds), ("library", fast_tokens, fast_seconds)):
        result[key] = {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds,
                       "tflops": 2 * params * tokens / seconds / 1e12}
    result["speedup"] = result["library"]["tokens_per_second"] / result["naive"]["tokens_per_second"]
    scale = base.float().abs().max().item()
    result["max_abs_diff_relative"] = (fast - base.float()).abs().max().item() / max(scale, 1e-12)
    if args.json:
        print(json.dumps(result))
    else:
        for key in ("naive", "library"):
            r = result[key]
            print(f"{key:8s} {r['tokens']:>9d} tokens {r['seconds']:8.2f} s {r['tokens_per_second']:10.0f} tokens/s "
                  f"{r['tflops']:10.3g} TFLOP/s")
        print(f"speedup {result['speedup']:.2f}x on {name}, {size} model ({params / 1e6:.1f} M non-embedding "
              f"params, {result['dtype']}), max |Δ| / max|h| = {result['max_abs_diff_relative']:.2e}")


if __name__ == "__main__":
    main()
