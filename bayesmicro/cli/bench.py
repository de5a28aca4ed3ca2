"""``bayesmicro bench``: run a benchmark suite and write results.json, results.md and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bayesmicro.bench import SUITES
from bayesmicro.cli import options as o
from bayesmicro.cli.common import cli_errors, emit_json
from bayesmicro.cli.options import choices
from bayesmicro.config import BenchConfig

SUITE = "Suite options"



@cli_errors
def bench_command(
    name: str = typer.Argument(..., metavar=choices(tuple(SUITES)), help="The suite to run."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds 0 … N−1 (default: the suite's own: "
                                        "synthetic 5, irreducible 1, speed 1, hh 5, classic 3, helpsteer2 1, "
                                        "rpr 1).", rich_help_panel=o.RUN),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder to write: a new or empty folder, or with "
                                       "--overwrite an earlier suite's (default: the per-user cache folder "
                                       "$XDG_CACHE_HOME/bayesmicro/bench/<suite> or ~/.cache/bayesmicro/bench/"
                                       "<suite>, replaced; never the current folder).", rich_help_panel=o.OUTPUT),
    overwrite: bool = o.overwrite("an earlier suite's results"),
    as_json: bool = typer.Option(False, "--json", help="Print the results (what results.json holds, with the "
                                 "common keys of docs/cli.md) on stdout.", rich_help_panel=o.OUTPUT),
    pairs: Optional[int] = typer.Option(None, "--pairs", help="scale: synthetic pairs (default 1,000,000).",
                                        rich_help_panel=SUITE),
    dim: Optional[int] = typer.Option(None, "--dim", help="scale: feature dimension (default 1,024).",
                                      rich_help_panel=SUITE),
    k: Optional[int] = typer.Option(None, "--k", help="scale, helpsteer2, rpr: mixture components (default 10).",
                                    rich_help_panel=SUITE),
    device: Optional[str] = typer.Option(None, "--device", help="scale: cpu or cuda[:i] (default cpu); speed "
                                         "(embedding throughput), helpsteer2, rpr (embedding): auto, cpu or "
                                         "cuda[:i] (default auto).", rich_help_panel=SUITE),
    data: Optional[str] = typer.Option(None, "--data", help="helpsteer2, rpr: local file/folder in the hub's "
                                       "layout, or a hub id (default nvidia/HelpSteer2, microsoft/rpr); ukp: a "
                                       "judgments table with prompt, chosen, rejected, user, topic, pair_id "
                                       "(default ../shared/data/ukp_convarg1_judgments.jsonl.gz).",
                                       rich_help_panel=SUITE),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="helpsteer2, rpr: transformers model id or "
                                           "folder for the features (default the paper's "
                                           "Ray2333/GRM-Llama3.2-3B-rewardmodel-ft).", rich_help_panel=SUITE),
    limit: Optional[int] = typer.Option(None, "--limit", help="helpsteer2, rpr: keep a seeded random N pairs.",
                                        rich_help_panel=SUITE),
    budgets: Optional[str] = typer.Option(None, "--budgets", help="synthetic, helpsteer2, rpr, ukp: stage-2 "
                                          "labelled pairs per group (ukp: per new annotator), comma-separated "
                                          "(default 10,25,50,100; ukp 5,20,50).", rich_help_panel=SUITE),
) -> None:
    """Regenerate a benchmark table and its plots: mean ± sd over seeds, machine and date stamped."""
    given = {"pairs": pairs, "dim": dim, "k": k, "device": device, "data": data, "backbone": backbone,
             "limit": limit, "budgets": budgets}
    job = BenchConfig(suite=name, seeds=seeds, out=None if out is None else str(out), overwrite=overwrite,
                      options={key: value for key, value in given.items() if value is not None})
    from bayesmicro import jobs

    results = jobs.run(job)
    if as_json:
        emit_json(results)
