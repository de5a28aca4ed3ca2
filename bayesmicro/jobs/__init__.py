"""Run any job config from Python: ``bayesmicro.run(config)`` does what the matching command does and returns the
dict its ``--json`` prints.

    >>> import bayesmicro as bm
    >>> report = bm.run(bm.FitJobConfig(data="features.npz", k=2, out="runs/k2"))   # bayesmicro fit … --json
    >>> routed = bm.run(bm.RouteConfig(run="runs/k2", data="features.npz", budget=25))

Each config class (``bayesmicro.config``) has one runner here (``RUNNERS``: config class → runner, imported on first
use, so ``import bayesmicro.jobs`` loads no torch). The report has the keys every command's JSON shares
(``command``, ``version``, ``seconds``, ``warnings``; docs/cli.md). Tables and messages go to stderr as with the CLI;
warnings are ``BayesmicroWarning``s, shown as Python shows warnings and listed under ``warnings``. The CLI's commands
are this call between their options and their output."""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import dataclass
from typing import Any, Callable

from bayesmicro.config import (BenchConfig, ComparisonsFitConfig, DiagnoseConfig, EmbedConfig, EvalConfig,
                               ExportConfig, FitJobConfig, JobConfig, RouteConfig, ScoreConfig, StoreFitConfig)


@dataclass(frozen=True)
class Runner:
    """The function that runs one kind of job (``module:function``, imported on first call) and the command whose
    ``--json`` its report matches."""

    command: str
    module: str
    function: str

    def __call__(self, config: JobConfig) -> dict[str, Any] | None:
        fn: Callable = getattr(importlib.import_module(self.module), self.function)
        return fn(config)


RUNNERS: dict[type, Runner] = {
    FitJobConfig: Runner("fit", "bayesmicro.jobs.fit", "run_fit"),
    StoreFitConfig: Runner("fit-store", "bayesmicro.jobs.store", "fit_streamed"),
    ComparisonsFitConfig: Runner("fit-comparisons", "bayesmicro.jobs.comparisons", "fit_comparisons"),
    EvalConfig: Runner("eval", "bayesmicro.jobs.evaluate", "run_eval"),
    ScoreConfig: Runner("score", "bayesmicro.jobs.score", "run_score"),
    DiagnoseConfig: Runner("diagnose", "bayesmicro.jobs.diagnose", "run_diagnose"),
    RouteConfig: Runner("route", "bayesmicro.jobs.route", "run_route"),
    EmbedConfig: Runner("embed", "bayesmicro.jobs.embed", "run_embed"),
    ExportConfig: Runner("export", "bayesmicro.jobs.export", "run_export"),
    BenchConfig: Runner("bench", "bayesmicro.jobs.bench", "run_bench"),
}


def runner_for(config: Any) -> Runner:
    """The runner of ``config``'s class (or of the nearest registered class it derives from); TypeError otherwise."""
    for cls in type(config).__mro__:
        if cls in RUNNERS:
            return RUNNERS[cls]
    names = ", ".join(cls.__name__ for cls in RUNNERS)
    raise TypeError(f"bayesmicro.run takes a job config ({names}), got {type(config).__name__}")


def run(config: JobConfig) -> dict[str, Any] | None:
    """Run ``config`` as its command would and return the report its ``--json`` prints (as ``json.loads`` reads it:
    plain lists, floats and str keys): the command's own keys plus ``command``, ``version``, ``seconds`` and
    ``warnings``. Torch's thread count is 1 during the job (as in the CLI;
    ``bayesmicro --threads`` aside) and restored after. None only for an ``EmbedConfig`` run on a torchrun rank other
    than 0 (rank 0 reports).

    Raises BadInput (one line; ``argument`` names the field) for input the job refuses, TypeError for an object that
    is not a job config."""
    from bayesmicro.jobs._common import collect_warnings, common_keys

    runner = runner_for(config)
    start = time.perf_counter()
    with collect_warnings() as said, _torch_threads_kept():
        report = runner(config)
    if report is None:
        return None
    # plain JSON types (lists, floats, str keys): exactly what the command's --json prints, read back
    return json.loads(json.dumps(common_keys(report, runner.command, start, said), default=float))


class _torch_threads_kept:
    """Torch's CPU thread count as it was before the job (a job sets its own, as the CLI does)."""

    def __enter__(self) -> None:
        import torch

        self.threads = torch.get_num_threads()

    def __exit__(self, *exc) -> None:
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)


__all__ = ["RUNNERS", "Runner", "run", "runner_for"]
