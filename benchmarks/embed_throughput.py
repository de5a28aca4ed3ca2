"""Embedding throughput: a naive loop (one example per forward pass), a plain length-sorted token-budget loop (the
reference) and bayesmicro's extraction, on the same texts, with the matmul peak measured on the device.

The measurement lives in ``bayesmicro.bench.embed_throughput`` and is part of ``bayesmicro bench speed`` (its own
table); this script runs it alone with its own sizes:

    python benchmarks/embed_throughput.py [--size auto|1b|small] [--pairs N] [--device auto|cpu|cuda]
        [--max-batch-tokens N] [--reference-tokens N] [--json]
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
    parser.add_argument("--pairs", type=int, default=None, help="texts to embed (default 1000 GPU, 48 CPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="library: at most N texts per pass (no cap)")
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="library token budget (default: sized "
                        "to the device)")
    parser.add_argument("--reference-tokens", type=int, default=None, help="reference loop's padded tokens per "
                        "batch (default 16384 GPU, 1024 CPU)")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.device, args.size, args.pairs, args.batch_size, args.max_length, args.max_batch_tokens,
                     args.reference_tokens)
    if args.json:
        print(json.dumps(result))
        return
    for key in ("naive", "reference", "library"):
        r = result[key]
        print(f"{key:9s} {r['tokens']:>9d} tokens {r['seconds']:8.2f} s {r['tokens_per_second']:10.0f} tokens/s "
              f"{r['tflops']:10.3g} TFLOP/s {100 * r['share_of_peak']:6.1f} % of peak")
    print(f"library/naive {result['speedup']:.2f}x, library/reference {result['library_vs_reference']:.2f}x on "
          f"{result['device']} (matmul peak {result['matmul_peak_tflops']:.3g} TFLOP/s), {result['size']} model "
          f"({result['non_embedding_params'] / 1e6:.1f} M non-embedding params, {result['dtype']}), library "
          f"{result['batching']} ≤ {result['max_batch_tokens']} tokens; max |Δ| / max|h| vs naive = "
          f"{result['max_abs_diff_relative']:.2e} (library), {result['reference_max_abs_diff_relative']:.2e} "
          f"(reference)")


if __name__ == "__main__":
    main()
