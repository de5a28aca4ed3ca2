"""Scale suite: a synthetic fp16 shard cache of N pairs on disk, one streamed epoch, throughput against the floor.

``run(pairs, dim, k, device, out_dir) -> dict``. Reports pairs/s of the fitting epoch, seconds per epoch, the time of
one sequential read of the cache (the memory-bandwidth floor: an epoch cannot be faster than reading its bytes) and
the ratio, and the process's peak RSS (``resource.getrusage``). On a CUDA device it also runs the preference-700K
shape (1.4 M pairs × 3,072 features), the paper's stage-1 scale.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bayesmicro.data.shards import write_synthetic_shards
from bayesmicro.infer.stream import StreamSchedule, fit_stream, read_pass_seconds

PREFERENCE_700K = {"pairs": 1_400_000, "dim": 3072}


def peak_rss_bytes() -> int:
    """Peak resident set size of this process and its (reaped) children; ru_maxrss is in KiB on Linux."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * 1024


def run(pairs: int = 1_000_000, dim: int = 1024, k: int = 10, device: str = "cpu", out_dir: str | None = None, *,
        batch_size: int = 16_384, router: str = "prompt", threads: int | None = None, seed: int = 0,
        preference_700k: bool | None = None) -> dict[str, Any]:
    """Write the cache (kept under ``out_dir`` when given, else in a temporary folder that is removed), fit one
    epoch, and return the measurements. ``preference_700k``: also run 1.4 M × 3,072 (default: on CUDA only)."""
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    result = _one(pairs, dim, k, device, out_dir, batch_size, router, seed)
    result["threads"] = threads
    if preference_700k if preference_700k is not None else device.startswith("cuda"):
        sub = None if out_dir is None else str(Path(out_dir) / "preference700k")
        result["preference700k"] = _one(PREFERENCE_700K["pairs"], PREFERENCE_700K["dim"], k, device, sub,
                                        batch_size, router, seed)
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["peak_rss_gb"] = result["peak_rss_bytes"] / 1e9
    return result


def _one(pairs: int, dim: int, k: int, device: str, out_dir: str | None, batch_size: int, router: str,
         seed: int) -> dict[str, Any]:
    root = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="bayesmicro-scale-"))
    try:
        start = time.perf_counter()
        store = write_synthetic_shards(root / "cache", pairs, dim, k, seed=seed)
        write_seconds = time.perf_counter() - start
        floor = read_pass_seconds(store, batch_size, router=router != "none")
        fit = fit_stream(store, k=k, router=router, seed=seed, device=device,
                         schedule=StreamSchedule(epochs=1, batch_size=batch_size, lr=2e-3))
        epoch = fit.summary["fit_seconds"]
        return {
            "pairs": pairs, "dim": dim, "k": k, "router": router, "device": device, "batch_size": batch_size,
            "cache_bytes": store.nbytes, "write_seconds": write_seconds, "read_pass_seconds": floor,
            "epoch_seconds": epoch, "pairs_per_second": pairs / epoch, "ratio_to_floor": epoch / floor,
            "loss_per_pair": fit.summary["loss_per_pair"], "peak_rss_bytes": peak_rss_bytes(),
            "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        }
    finally:
        if out_dir is None:
            shutil.rmtree(root, ignore_errors=True)
