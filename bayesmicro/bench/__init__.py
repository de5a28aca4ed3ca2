"""Benchmark suites: ``bayesmicro bench NAME`` regenerates a table and its plots from seeds.

Each suite is a module ``bayesmicro.bench.<name>`` exposing ``run(seeds, out_dir, **kw) -> dict`` that writes
``results.json``, ``results.md`` and PNG plots into ``out_dir`` (see ``bayesmicro.bench.report``) and returns what
``results.json`` holds. Register a new suite with one line in ``SUITES``. Results live in ``benchmarks/results/<name>/``
at the repository root by default.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from bayesmicro.errors import BadInput

SUITES: dict[str, str] = {
    "synthetic": "bayesmicro.bench.synthetic",
    "irreducible": "bayesmicro.bench.irreducible",
    "speed": "bayesmicro.bench.speed",
    "scale": "bayesmicro.bench.scale",
    "hh": "bayesmicro.bench.hh",
    "classic": "bayesmicro.bench.classic",
    "helpsteer2": "bayesmicro.bench.helpsteer2",
    "rpr": "bayesmicro.bench.rpr",
    "ukp": "bayesmicro.bench.ukp",
}
DEFAULT_RESULTS = Path("benchmarks") / "results"


def run_suite(name: str, seeds: int = 5, out_dir: str | Path | None = None, **kw: Any) -> dict[str, Any]:
    """Run suite ``name`` with seeds 0 … seeds−1, writing into ``out_dir`` (default benchmarks/results/<name>/)."""
    if name not in SUITES:
        raise BadInput(f"unknown benchmark suite {name!r}; choose one of {', '.join(sorted(SUITES))}")
    if seeds < 1:
        raise BadInput(f"--seeds must be ≥ 1, got {seeds}")
    module = importlib.import_module(SUITES[name])
    return module.run(seeds=seeds, out_dir=Path(out_dir) if out_dir else DEFAULT_RESULTS / name, **kw)


__all__ = ["SUITES", "run_suite"]
