"""Benchmark suites: ``bayesmicro bench NAME`` regenerates a table and its plots from seeds.

Each suite is a module ``bayesmicro.bench.<name>`` exposing ``run(seeds, out_dir, **kw) -> dict`` that writes
``results.json``, ``results.md`` and PNG plots into ``out_dir`` (see ``bayesmicro.bench.report``) and returns what
``results.json`` holds. Register a new suite with one line in ``SUITES``. Results go to ``out_dir``, by default the
per-user cache folder ``default_out(name)`` (``$XDG_CACHE_HOME/bayesmicro/bench/<name>``, ``~/.cache/...`` without
it), never the current folder; the repository's tables are regenerated with ``--out benchmarks/results/<name>``.
"""

from __future__ import annotations

import importlib
import os
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


def default_out(name: str) -> Path:
    """Where suite ``name`` writes when no folder is given: ``$XDG_CACHE_HOME/bayesmicro/bench/<name>`` (an
    absolute ``XDG_CACHE_HOME`` only, as the XDG spec says), else ``~/.cache/bayesmicro/bench/<name>``."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(cache) if cache and os.path.isabs(cache) else Path.home() / ".cache"
    return root / "bayesmicro" / "bench" / name


def run_suite(name: str, seeds: int = 5, out_dir: str | Path | None = None, overwrite: bool | None = None,
              **kw: Any) -> dict[str, Any]:
    """Run suite ``name`` with seeds 0 … seeds−1, writing into ``out_dir`` (default ``default_out(name)``); the
    results carry ``out_dir``, the folder written.

    ``out_dir`` must not exist, be empty, or (``overwrite``) hold an earlier result of a suite and nothing else;
    ``overwrite`` None: replace the default (cache) folder, never a given one."""
    from bayesmicro._io import check_output
    from bayesmicro.bench.report import replacing

    if name not in SUITES:
        raise BadInput(f"unknown benchmark suite {name!r}; choose one of {', '.join(sorted(SUITES))}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise BadInput(f"--seeds must be ≥ 1, got {seeds}")
    target = Path(out_dir) if out_dir else default_out(name)
    allowed = (not out_dir) if overwrite is None else bool(overwrite)
    check_output(target, "bench", overwrite=allowed, inputs=(kw.get("data"),))
    module = importlib.import_module(SUITES[name])
    with replacing(allowed):
        results = module.run(seeds=seeds, out_dir=target, **kw)
    results["out_dir"] = str(target)
    return results


__all__ = ["SUITES", "default_out", "run_suite"]
