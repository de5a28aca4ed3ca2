"""The ``bench`` job (``bayesmicro bench``, ``bayesmicro.run(BenchConfig(...))``): run a benchmark suite and write
results.json, results.md and plots."""

from __future__ import annotations

from bayesmicro.bench import SUITES
from bayesmicro.config import BenchConfig
from bayesmicro.jobs._common import stderr


def run_bench(job: BenchConfig) -> dict:
    """Run the suite; where it wrote is on stderr and in the results (``out``; ``out_dir`` its older name)."""
    import importlib
    import inspect

    from bayesmicro.bench import run_suite

    seeds = job.seeds
    if seeds is None and job.suite in SUITES:
        seeds = inspect.signature(importlib.import_module(SUITES[job.suite]).run).parameters["seeds"].default
    results = run_suite(job.suite, seeds=seeds if seeds is not None else 5, out_dir=job.out,
                        overwrite=True if job.overwrite else None, **job.options)
    results["out"] = results["out_dir"]
    stderr.print(f"wrote {results['out']}/results.json, results.md and {len(results['files']) - 2} plot(s)")
    return results
