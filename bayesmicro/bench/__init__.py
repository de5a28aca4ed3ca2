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
    # studies behind single claims of the docs (long runs; their committed raw results predate the suites)
    "vi_posteriors": "bayesmicro.bench.vi_posteriors",
    "nuts_mass": "bayesmicro.bench.nuts_mass",
    "routing_synthetic": "bayesmicro.bench.routing_synthetic",
    "routing_active": "bayesmicro.bench.routing_active",
    "hh_optima": "bayesmicro.bench.hh_optima",
    "hh_restarts": "bayesmicro.bench.hh_restarts",
    "gpu_agreement": "bayesmicro.bench.gpu_agreement",
}
DEFAULT_RESULTS = Path("benchmarks") / "results"


def run_suite(name: str, seeds: int = 5, out_dir: str | Path | None = None, overwrite: bool | None = None,
              **kw: Any) -> dict[str, Any]:
    """Run suite ``name`` with seeds 0 … seeds−1, writing into ``out_dir`` (default benchmarks/results/<name>/).

    ``out_dir`` must not exist, be empty, or (``overwrite``) hold an earlier result of a suite and nothing else;
    ``overwrite`` None: replace the default folder (regenerating the repository's results), never a given one."""
    from bayesmicro._io import check_output
    from bayesmicro.bench.report import replacing

    if name not in SUITES:
        raise BadInput(f"unknown benchmark suite {name!r}; choose one of {', '.join(sorted(SUITES))}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise BadInput(f"--seeds must be ≥ 1, got {seeds}")
    target = Path(out_dir) if out_dir else DEFAULT_RESULTS / name
    allowed = (not out_dir) if overwrite is None else bool(overwrite)
    check_output(target, "bench", overwrite=allowed, inputs=(kw.get("data"),))
    module = importlib.import_module(SUITES[name])
    with replacing(allowed):
        return module.run(seeds=seeds, out_dir=target, **kw)


__all__ = ["SUITES", "run_suite"]
