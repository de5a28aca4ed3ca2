"""``scale``: a synthetic fp16 shard cache of N pairs on disk, one streamed epoch, throughput against the floor.

``run(pairs, dim, k, device, out_dir) -> dict`` (also callable as a ``bayesmicro bench`` suite:
``run(seeds=..., out_dir=..., pairs=..., ...)``). Reports pairs/s of the fitting epoch, seconds per epoch, the time of
one sequential read of the cache (the memory-bandwidth floor: an epoch cannot be faster than reading its bytes) and
the ratio, and the peak RSS (``resource.getrusage``) of the process that did the work. On a CUDA device it also runs
the preference-700K shape (1.4 M pairs × 3,072 features), the paper's stage-1 scale. ``out_dir`` receives
``results.json`` (and ``results.md`` where ``bayesmicro.bench.report`` exists); the cache goes to a temporary folder
that is removed, or to ``cache_dir`` where it is kept and reused by the next run of the same shape.

The measurement runs in a fresh child process: its peak RSS is then the benchmark's alone, and the child is started
with ``THP_MEM_ALLOC_ENABLE=1`` so that torch backs large CPU tensors with transparent huge pages (read once, when
torch first allocates, hence the fresh process).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PREFERENCE_700K = {"pairs": 1_400_000, "dim": 3072}
CHILD_FLAG = "--scale-child"


def peak_rss_bytes() -> int:
    """Peak resident set size of this process; ru_maxrss is in KiB on Linux."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(pairs: int = 1_000_000, dim: int = 1024, k: int = 10, device: str = "cpu",
        out_dir: str | os.PathLike | None = None, *, seeds: int = 1, cache_dir: str | None = None,
        batch_size: int = 16_384, router: str = "prompt", threads: int | None = None,
        preference_700k: bool | None = None, isolate: bool = True, router_dtype: str = "float32",
        prefetch: int = 1, **_: Any) -> dict[str, Any]:
    """Write the cache, fit one epoch, return the measurements (and write them to ``out_dir`` when given).
    ``seeds``: seed of the synthetic data and the fit (the suite measures one run; seed = seeds − 1 = 0 by default).
    ``preference_700k``: also run 1.4 M × 3,072 (default: on CUDA only). ``isolate``: measure in a child process
    (clean peak RSS, huge pages); False measures in this process."""
    args = {"pairs": pairs, "dim": dim, "k": k, "device": device, "out_dir": cache_dir, "batch_size": batch_size,
            "router": router, "threads": threads or os.cpu_count() or 1, "seed": max(0, seeds - 1),
            "router_dtype": router_dtype, "prefetch": prefetch}
    with_700k = preference_700k if preference_700k is not None else device.startswith("cuda")
    result = _measure(args, isolate)
    if with_700k:
        sub = None if cache_dir is None else str(Path(cache_dir) / "preference700k")
        result["preference700k"] = _measure({**args, **PREFERENCE_700K, "out_dir": sub}, isolate)
    return result if out_dir is None else _write(Path(out_dir), result)


def _write(out_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    """results.json (+ results.md) into ``out_dir``; returns what results.json holds."""
    try:
        from bayesmicro.bench.report import markdown_table, write_suite
    except ImportError:  # the suite runner's reporting is not on this branch: JSON only
        from bayesmicro._io import write_json

        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "results.json", result)
        return result
    rows = [r for r in (result, result.get("preference700k")) if r]
    table = markdown_table([{"shape": f"{r['pairs']:,} × {r['dim']}, K = {r['k']}", **r} for r in rows],
                           ["shape", "device", "pairs_per_second", "epoch_seconds", "read_pass_seconds",
                            "ratio_to_floor", "peak_rss_gb"], digits=2)
    return write_suite(out_dir, "scale", result,
                       [("Streamed one-epoch fit from a memory-mapped fp16 shard cache", table)])


def _measure(args: dict[str, Any], isolate: bool) -> dict[str, Any]:
    if not isolate:
        return measure_here(**args)
    root = str(Path(__file__).resolve().parents[2])  # the checkout holding this bayesmicro, first on the child's path
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run([sys.executable, "-m", "bayesmicro.bench.scale", CHILD_FLAG, json.dumps(args)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"scale benchmark child failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_here(pairs: int, dim: int, k: int, device: str, out_dir: str | None, batch_size: int, router: str,
                 threads: int, seed: int, router_dtype: str = "float32", prefetch: int = 1) -> dict[str, Any]:
    """One measurement in this process."""
    import torch

    from bayesmicro.data.shards import write_synthetic_shards
    from bayesmicro.infer.stream import StreamSchedule, fit_stream, read_pass_seconds

    torch.set_num_threads(threads)
    root = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="bayesmicro-scale-"))
    try:
        start = time.perf_counter()
        store = _reusable(root / "cache", pairs, dim, k, seed)
        reused = store is not None
        store = store or write_synthetic_shards(root / "cache", pairs, dim, k, seed=seed)
        write_seconds = None if reused else time.perf_counter() - start
        rss_after_write = peak_rss_bytes()
        floor = read_pass_seconds(store, batch_size, router=router != "none")
        fit = fit_stream(store, k=k, router=router, seed=seed, device=device,
                         schedule=StreamSchedule(epochs=1, batch_size=batch_size, lr=2e-3, router_dtype=router_dtype,
                                                 prefetch=prefetch))
        epoch = fit.summary["fit_seconds"]
        return {
            "pairs": pairs, "dim": dim, "k": k, "router": router, "device": device, "batch_size": batch_size,
            "threads": threads, "router_dtype": router_dtype, "prefetch": prefetch, "cache_bytes": store.nbytes, "write_seconds": write_seconds, "cache_reused": reused,
            "read_pass_seconds": floor, "read_pass_pairs_per_second": pairs / floor,
            "epoch_seconds": epoch, "pairs_per_second": pairs / epoch, "ratio_to_floor": epoch / floor,
            "loss_per_pair": fit.summary["loss_per_pair"], "peak_rss_bytes": peak_rss_bytes(),
            "peak_rss_gb": peak_rss_bytes() / 1e9, "peak_rss_write_bytes": rss_after_write,
            "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else os.uname().machine,
            "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
        }
    finally:
        if out_dir is None:
            shutil.rmtree(root, ignore_errors=True)


def _reusable(path: Path, pairs: int, dim: int, k: int, seed: int):
    """A cache this suite wrote before under ``--out`` with the same shape and seed, else None."""
    from bayesmicro.data.shards import ShardStore
    from bayesmicro.errors import BadInput

    if not (path / "manifest.json").is_file():
        return None
    try:
        store = ShardStore(path)
    except BadInput:
        return None
    made = store.meta.get("synthetic", {})
    same = (made.get("pairs"), made.get("dim"), made.get("k"), made.get("seed")) == (pairs, dim, k, seed)
    return store if same else None


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == CHILD_FLAG:
    print(json.dumps(measure_here(**json.loads(sys.argv[2]))))
