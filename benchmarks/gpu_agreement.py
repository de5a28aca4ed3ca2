"""How far a streamed CUDA fit lands from the CPU fit and from itself (cuBLAS reductions are not bit-reproducible).

Writes the built-in synthetic population (scaled up) to an fp16 shard store, fits it with ``fit_stream`` once on the
CPU and twice on the GPU (same seed, same schedule), and compares the held-out P(chosen ≻ rejected):

    python benchmarks/gpu_agreement.py [--pairs N] [--epochs E] [--json]
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

from bayesmicro.data.shards import write_shards  # noqa: E402
from bayesmicro.data.synthetic import PopulationSpec, make_population  # noqa: E402
from bayesmicro.infer.stream import StreamSchedule, fit_stream  # noqa: E402


def gaps(p: torch.Tensor, q: torch.Tensor) -> dict[str, float]:
    """Max and median |p − q| and the share of pairs whose decision (P > ½) differs."""
    d = (p - q).abs()
    return {"max_abs": float(d.max()), "median_abs": float(d.median()),
            "decision_flips": float(((p > 0.5) != (q > 0.5)).double().mean())}


def metrics(p: torch.Tensor) -> dict[str, float]:
    return {"accuracy": float((p > 0.5).double().mean()), "nll": float(-p.clamp_min(1e-12).log().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_agreement: needs a CUDA device")
    data, _ = make_population(PopulationSpec(n_pairs=args.pairs), seed=0)
    n_test = args.pairs // 4
    train, test = data.subset(torch.arange(n_test, args.pairs)), data.subset(torch.arange(n_test))
    schedule = StreamSchedule(epochs=args.epochs, batch_size=args.batch_size)
    runs, probs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        store = write_shards(train, Path(tmp) / "store")
        for name, device in (("cpu", "cpu"), ("cuda_a", "cuda"), ("cuda_b", "cuda")):
            start = time.perf_counter()
            fit = fit_stream(store, k=3, router="context", seed=0, schedule=schedule, device=device)
            probs[name] = fit.predict_proba(test).double()
            runs[name] = {"seconds": time.perf_counter() - start, **metrics(probs[name])}
    result = {"pairs": args.pairs, "held_out": n_test, "epochs": args.epochs, "batch_size": args.batch_size,
              "device_name": torch.cuda.get_device_name(0), "torch": torch.__version__, "runs": runs,
              "cuda_vs_cuda": gaps(probs["cuda_a"], probs["cuda_b"]),
              "cuda_vs_cpu": gaps(probs["cuda_a"], probs["cpu"]),
              "cuda_bitwise_repeat": bool(torch.equal(probs["cuda_a"], probs["cuda_b"]))}
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
