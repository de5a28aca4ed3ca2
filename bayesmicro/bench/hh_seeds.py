"""Shared by the hh study suites (``hh_optima``, ``hh_restarts``): run a study seed by seed on the embedded HH pairs."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from bayesmicro.bench.hh import embed_hh
from bayesmicro.bench.report import log
from bayesmicro.data.embedded import EmbeddedPairs


def run_seeds(run_seed: Callable[[EmbeddedPairs, int, int], dict], seeds: list[int], restarts: int) -> dict[str, dict]:
    """{str(seed): run_seed(embedded HH pairs, seed, restarts)} on one torch thread, printing each seed's time."""
    torch.set_num_threads(1)
    data, _ = embed_hh()
    by_seed = {}
    for seed in seeds:
        start = time.perf_counter()
        by_seed[str(seed)] = run_seed(data, seed, restarts)
        log(f"seed {seed}: {time.perf_counter() - start:.0f} s")
    return by_seed
