"""Determinism of `route` and `bench` on CPU, and a `bench` suite killed with SIGKILL then rerun."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cli.helpers import ROOT, run_cli
from tests.routing.test_routing import _reversed_population, _stage1
from tests.common import child_env

# A bench suite small enough for a test: the synthetic suite on a 400-pair population, one seed, one restart.
BENCH_SCRIPT = """
import sys
from bayesmicro.bench import run_suite
from bayesmicro.data.synthetic import PopulationSpec
run_suite("synthetic", seeds=1, out_dir=sys.argv[1], restarts=1, overwrite=sys.argv[2] == "overwrite",
          spec=PopulationSpec(n_pairs=400, dim=6, prompt_dim=4, context_dim=3))
"""
TIMING_KEYS = ("seconds", "fit_seconds", "machine", "date", "load_average", "files", "out_dir")


def _without_timings(value):
    """Results with wall-clock and machine stamps removed: what must repeat exactly for a seed."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _bench(out: Path, overwrite: bool = False) -> subprocess.Popen:
    env = child_env()
    return subprocess.Popen([sys.executable, "-c", BENCH_SCRIPT, str(out), "overwrite" if overwrite else "new"],
                            env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _results(out: Path) -> dict:
    return _without_timings(json.loads((out / "results.json").read_text()))


def test_route_same_seed_same_json(tmp_path):
    data, heads, _ = _reversed_population(n=300)
    _stage1(heads).save(tmp_path / "run")
    data.save(tmp_path / "pairs")
    args = ("route", tmp_path / "run", tmp_path / "pairs", "--method", "hedge,posterior,amortized,hyre",
            "--budget", "10", "--seed", "3", "--json")
    first, second = run_cli(*args, subprocess=True), run_cli(*args, subprocess=True)  # two processes
    assert first.code == 0, first.stderr

    def results(run) -> dict:  # everything but the wall time
        return {key: value for key, value in run.json().items() if key != "seconds"}

    assert results(first) == results(second)
    other = run_cli(*args[:-3], "--seed", "4", "--json")
    assert results(other) != results(first)  # the seed matters, so the equality above is not vacuous


def test_bench_suite_same_seed_same_numbers_and_a_sigkill_leaves_nothing_half_written(tmp_path):
    reference = _bench(tmp_path / "reference")
    start = time.perf_counter()
    assert reference.wait(timeout=600) == 0, reference.stderr.read().decode()
    seconds = time.perf_counter() - start
    repeat = _bench(tmp_path / "repeat")
    assert repeat.wait(timeout=600) == 0
    assert _results(tmp_path / "repeat") == _results(tmp_path / "reference")

    killed = _bench(tmp_path / "killed")
    time.sleep(random.Random(0).uniform(0.3, 0.9) * seconds)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    out = tmp_path / "killed"
    if out.exists():  # it finished before the kill: then it is complete
        assert _results(out) == _results(tmp_path / "reference")
    rerun = _bench(out, overwrite=True)  # replaces what the killed run may have finished
    assert rerun.wait(timeout=600) == 0
    assert _results(out) == _results(tmp_path / "reference")
    assert {"results.json", "results.md"} <= {p.name for p in out.iterdir()}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".killed.")] == []
