"""``bayesmicro bench gpu_agreement``: how far a streamed CUDA fit lands from the CPU fit and from itself (cuBLAS
reductions are not bit-reproducible).

Writes the built-in synthetic population (scaled up) to an fp16 shard store, fits it with ``fit_stream`` once on the
CPU and twice on the GPU (same seed, same schedule), and compares the held-out P(chosen ≻ rejected):

    bayesmicro bench gpu_agreement --json   (needs a CUDA device)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from bayesmicro.bench.report import json_block, write_suite
from bayesmicro.data.shards import write_shards
from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.errors import BadInput
from bayesmicro.infer.stream import StreamSchedule, fit_stream


def gaps(p: torch.Tensor, q: torch.Tensor) -> dict[str, float]:
    """Max and median |p − q| and the share of pairs whose decision (P > ½) differs."""
    d = (p - q).abs()
    return {"max_abs": float(d.max()), "median_abs": float(d.median()),
            "decision_flips": float(((p > 0.5) != (q > 0.5)).double().mean())}


def metrics(p: torch.Tensor) -> dict[str, float]:
    return {"accuracy": float((p > 0.5).double().mean()), "nll": float(-p.clamp_min(1e-12).log().mean())}


def run(seeds: int = 1, out_dir=None, pairs: int = 200_000, epochs: int = 3, batch_size: int = 4096) -> dict:
    """The built-in population scaled to ``pairs`` (a quarter held out), fitted once on the CPU and twice on the GPU
    (seed 0; ``seeds`` is accepted for the suite interface and unused)."""
    if not torch.cuda.is_available():
        raise BadInput("gpu_agreement needs a CUDA device")
    data, _ = make_population(PopulationSpec(n_pairs=pairs), seed=0)
    n_test = pairs // 4
    train, test = data.subset(torch.arange(n_test, pairs)), data.subset(torch.arange(n_test))
    schedule = StreamSchedule(epochs=epochs, batch_size=batch_size)
    runs, probs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        store = write_shards(train, Path(tmp) / "store")
        for name, device in (("cpu", "cpu"), ("cuda_a", "cuda"), ("cuda_b", "cuda")):
            start = time.perf_counter()
            fit = fit_stream(store, k=3, router="context", seed=0, schedule=schedule, device=device)
            probs[name] = fit.predict_proba(test).double()
            runs[name] = {"seconds": time.perf_counter() - start, **metrics(probs[name])}
    result = {"pairs": pairs, "held_out": n_test, "epochs": epochs, "batch_size": batch_size,
              "device_name": torch.cuda.get_device_name(0), "torch": torch.__version__, "runs": runs,
              "cuda_vs_cuda": gaps(probs["cuda_a"], probs["cuda_b"]),
              "cuda_vs_cpu": gaps(probs["cuda_a"], probs["cpu"]),
              "cuda_bitwise_repeat": bool(torch.equal(probs["cuda_a"], probs["cuda_b"]))}
    return write_suite(out_dir, "gpu_agreement", result, [("CUDA vs CPU and CUDA vs CUDA", json_block(result))])
