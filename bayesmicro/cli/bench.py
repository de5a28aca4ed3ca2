"""``bayesmicro bench``: run a benchmark suite and write results.json, results.md and plots."""

from __future__ import annotations

import inspect
import importlib
from pathlib import Path
from typing import Optional

import typer

from bayesmicro.bench import SUITES, run_suite
from bayesmicro.cli.common import cli_errors, emit_json, stderr
from bayesmicro.errors import BadInput


@cli_errors
def bench_command(
    name: str = typer.Argument(..., help=f"Suite: {', '.join(sorted(SUITES))}."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds 0 … N−1 (default: the suite's own: "
                                        "synthetic 5, irreducible 1, speed 1, hh 5, classic 3)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder to write (default benchmarks/results/<suite>/)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results (what results.json holds) on stdout."),
    pairs: Optional[int] = typer.Option(None, "--pairs", help="scale: synthetic pairs (default 1,000,000)."),
    dim: Optional[int] = typer.Option(None, "--dim", help="scale: feature dimension (default 1,024)."),
    k: Optional[int] = typer.Option(None, "--k", help="scale: mixture components (default 10)."),
    device: Optional[str] = typer.Option(None, "--device", help="scale: cpu or cuda[:i] (default cpu)."),
) -> None:
    """Regenerate a benchmark table and its plots: mean ± sd over seeds, machine and date stamped."""
    if seeds is None and name in SUITES:
        seeds = inspect.signature(importlib.import_module(SUITES[name]).run).parameters["seeds"].default
    extra = {key: value for key, value in (("pairs", pairs), ("dim", dim), ("k", k), ("device", device))
             if value is not None}
    if extra and name != "scale":
        raise BadInput(f"--{', --'.join(extra)} only apply to the scale suite")
    _check_scale_options(extra)
    results = run_suite(name, seeds=seeds if seeds is not None else 5, out_dir=out, **extra)
    results["out_dir"] = str(out or Path("benchmarks") / "results" / name)
    stderr.print(f"wrote {results['out_dir']}/results.json, results.md and {len(results['files']) - 2} plot(s)")
    if as_json:
        emit_json(results)


def _check_scale_options(extra: dict) -> None:
    for option in ("pairs", "dim", "k"):
        if option in extra and extra[option] < 1:
            raise BadInput(f"--{option} must be ≥ 1, got {extra[option]}")
    device = extra.get("device", "cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise BadInput(f"--device must be cpu or cuda[:i], got {device!r}")
