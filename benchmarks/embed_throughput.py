"""Embedding throughput: a naive loop (one example per forward pass) vs bayesmicro's extraction, same texts.

The measurement lives in ``bayesmicro.bench.embed_throughput`` and is part of ``bayesmicro bench speed`` (its own
table); this script runs it alone with its own sizes:

    python benchmarks/embed_throughput.py [--size auto|1b|small] [--pairs N] [--device auto|cpu|cuda] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bayesmicro.bench.embed_throughput import SIZES, measure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="auto", choices=["auto", *SIZES])
    parser.add_argument("--pairs", type=int, default=None, help="texts to embed (default 2000 GPU, 48 CPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="library batch size (default 64 GPU, 16 CPU)")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.device, args.size, args.pairs, args.batch_size, args.max_length)
    if args.json:
        print(json.dumps(result))
        return
    for key in ("naive", "library"):
        r = result[key]
        print(f"{key:8s} {r['tokens']:>9d} tokens {r['seconds']:8.2f} s {r['tokens_per_second']:10.0f} tokens/s "
              f"{r['tflops']:10.3g} TFLOP/s")
    print(f"speedup {result['speedup']:.2f}x on {result['device']}, {result['size']} model "
          f"({result['non_embedding_params'] / 1e6:.1f} M non-embedding params, {result['dtype']}), "
          f"max |Δ| / max|h| = {result['max_abs_diff_relative']:.2e}")


if __name__ == "__main__":
    main()
