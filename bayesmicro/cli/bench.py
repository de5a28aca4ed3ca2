"""``bayesmicro bench``: run a benchmark suite and write results.json, results.md and plots."""

from __future__ import annotations

import inspect
import importlib
from pathlib import Path
from typing import Any, Optional

import typer

from bayesmicro.bench import SUITES, run_suite
from bayesmicro.cli.common import cli_errors, emit_json, stderr
from bayesmicro.errors import BadInput

PROTOCOL_SUITES = ("helpsteer2", "rpr")
# option → the suites that take it
OPTION_SUITES: dict[str, tuple[str, ...]] = {
    "pairs": ("scale",), "dim": ("scale",), "k": ("scale", *PROTOCOL_SUITES),
    "device": ("scale", "speed", *PROTOCOL_SUITES), "data": (*PROTOCOL_SUITES, "ukp"),
    "backbone": PROTOCOL_SUITES, "limit": PROTOCOL_SUITES, "budgets": ("synthetic", *PROTOCOL_SUITES, "ukp"),
}


@cli_errors
def bench_command(
    name: str = typer.Argument(..., help=f"Suite: {', '.join(sorted(SUITES))}."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds 0 … N−1 (default: the suite's own: "
                                        "synthetic 5, irreducible 1, speed 1, hh 5, classic 3, helpsteer2 1, "
                                        "rpr 1)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder to write: a new or empty folder, or with "
                                       "--overwrite an earlier suite's (default benchmarks/results/<suite>/, "
                                       "replaced)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out when it holds an earlier suite's results "
                                   "(and nothing bayesmicro did not write)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results (what results.json holds) on stdout."),
    pairs: Optional[int] = typer.Option(None, "--pairs", help="scale: synthetic pairs (default 1,000,000)."),
    dim: Optional[int] = typer.Option(None, "--dim", help="scale: feature dimension (default 1,024)."),
    k: Optional[int] = typer.Option(None, "--k", help="scale, helpsteer2, rpr: mixture components (default 10)."),
    device: Optional[str] = typer.Option(None, "--device", help="scale: cpu or cuda[:i] (default cpu); speed "
                                         "(embedding throughput), helpsteer2, rpr (embedding): auto, cpu or "
                                         "cuda[:i] (default auto)."),
    data: Optional[str] = typer.Option(None, "--data", help="helpsteer2, rpr: local file/folder in the hub's "
                                       "layout, or a hub id (default nvidia/HelpSteer2, microsoft/rpr); ukp: a "
                                       "judgments table with prompt, chosen, rejected, user, topic, pair_id "
                                       "(default ../shared/data/ukp_convarg1_judgments.jsonl.gz)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="helpsteer2, rpr: transformers model id or "
                                           "folder for the features (default the paper's "
                                           "Ray2333/GRM-Llama3.2-3B-rewardmodel-ft)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="helpsteer2, rpr: keep a seeded random N pairs."),
    budgets: Optional[str] = typer.Option(None, "--budgets", help="synthetic, helpsteer2, rpr, ukp: stage-2 "
                                          "labelled pairs per group (ukp: per new annotator), comma-separated "
                                          "(default 10,25,50,100; ukp 5,20,50)."),
) -> None:
    """Regenerate a benchmark table and its plots: mean ± sd over seeds, machine and date stamped."""
    if seeds is None and name in SUITES:
        seeds = inspect.signature(importlib.import_module(SUITES[name]).run).parameters["seeds"].default
    given = {"pairs": pairs, "dim": dim, "k": k, "device": device, "data": data, "backbone": backbone,
             "limit": limit, "budgets": budgets}
    extra = check_options(name, {key: value for key, value in given.items() if value is not None})
    results = run_suite(name, seeds=seeds if seeds is not None else 5, out_dir=out,
                        overwrite=True if overwrite else None, **extra)
    results["out_dir"] = str(out or Path("benchmarks") / "results" / name)
    stderr.print(f"wrote {results['out_dir']}/results.json, results.md and {len(results['files']) - 2} plot(s)")
    if as_json:
        emit_json(results)


def check_options(name: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The suite-specific options, checked (BadInput on an option the suite does not take or a bad value), with
    ``budgets`` parsed to a tuple of ints."""
    if name in SUITES:
        for option in extra:
            suites = OPTION_SUITES[option]
            if name not in suites:
                raise BadInput(f"--{option} only applies to the {', '.join(suites)} suite"
                               f"{'s' if len(suites) > 1 else ''}, not {name}")
    for option in ("pairs", "dim", "k", "limit"):
        if option in extra and extra[option] < 1:
            raise BadInput(f"--{option} must be ≥ 1, got {extra[option]}")
    if extra.get("data") is not None and not str(extra["data"]).strip():
        raise BadInput("--data must be a file, folder or hub id, got ''")
    if "budgets" in extra:
        extra["budgets"] = parse_budgets(extra["budgets"])
    device = extra.get("device", "cpu")
    allowed = ("cpu",) if name == "scale" else ("cpu", "auto")
    if not (device in allowed or device.startswith("cuda")):
        raise BadInput(f"--device must be {' or '.join(allowed)} or cuda[:i], got {device!r}")
    return extra


def parse_budgets(text: str) -> tuple[int, ...]:
    """'10,25,50' → (10, 25, 50); BadInput unless every item is an integer ≥ 1."""
    try:
        values = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise BadInput(f"--budgets must be comma-separated integers ≥ 1 (e.g. 10,25,50), got {text!r}")
    return values
