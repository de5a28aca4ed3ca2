"""``bayesmicro bench scale``: streamed one-epoch fit of a synthetic fp16 shard cache (1 M × 1,024, K = 10 by
default): pairs/s, seconds per epoch, the read-pass floor and the ratio, peak RSS."""

from __future__ import annotations

from typing import Optional

import typer

from bayesmicro.cli.common import cli_errors, emit_json, print_table
from bayesmicro.errors import BadInput


@cli_errors
def bench_scale_command(
    pairs: int = typer.Option(1_000_000, "--pairs", help="Synthetic pairs in the cache."),
    dim: int = typer.Option(1024, "--dim", help="Response (and prompt) feature dimension."),
    k: int = typer.Option(10, "--k", help="Mixture components."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:i]."),
    out: Optional[str] = typer.Option(None, "--out", help="Write results.json here."),
    cache: Optional[str] = typer.Option(None, "--cache", help="Keep (and reuse) the cache here (default: a "
                                        "temporary folder, removed)."),
    batch_size: int = typer.Option(16_384, "--batch-size", help="Pairs per minibatch."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: all cores)."),
    router_dtype: str = typer.Option("float32", "--router-dtype", help="float32 or bfloat16 router matmuls."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Write a synthetic fp16 shard cache, fit one streamed epoch and report throughput against the read floor."""
    for name, value in (("--pairs", pairs), ("--dim", dim), ("--k", k), ("--batch-size", batch_size)):
        if value < 1:
            raise BadInput(f"{name} must be ≥ 1, got {value}")
    if not (device == "cpu" or device.startswith("cuda")):
        raise BadInput(f"--device must be cpu or cuda[:i], got {device!r}")
    if router_dtype not in ("float32", "bfloat16"):
        raise BadInput(f"--router-dtype must be float32 or bfloat16, got {router_dtype!r}")
    from bayesmicro.bench.scale import run

    result = run(pairs, dim, k, device, out, cache_dir=cache, batch_size=batch_size, threads=threads,
                 router_dtype=router_dtype)
    if json_out:
        emit_json(result)
        return
    rows = {f"{r['pairs']:,} × {r['dim']}": r for r in [result, result.get("preference700k")] if r}
    print_table("bench scale", rows, ("pairs_per_second", "epoch_seconds", "read_pass_seconds", "ratio_to_floor",
                                      "peak_rss_gb"))
