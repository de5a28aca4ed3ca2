"""Interrupted jobs: SIGKILL `bayesmicro fit DATA --out DIR` at random moments and at the worst moments, then rerun.

After a kill the out folder is either absent or complete (it loads and its metrics match an uninterrupted run); the
rerun ends with exactly the uninterrupted run's numbers and files, and no temp leftovers remain beside it.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.infer.results.mixture import Fit
from tests.cli.helpers import ROOT, run_cli
from tests.common import child_env

FIT_ARGS = ("--k", "2", "--restarts", "2", "--seed", "3", "--json", "--overwrite")  # a rerun replaces its own run
VOLATILE = {"seconds", "out"}  # wall time and the folder name legitimately differ between runs

RANDOM_KILLS = [("fresh_out", 0), ("fresh_out", 1), ("overwrite_previous_run", 2)]
WORST_MOMENTS = ["after_params_before_metrics", "between_the_two_renames_of_an_overwrite"]
SCENARIOS = len(RANDOM_KILLS) + len(WORST_MOMENTS)  # the README's interruption count


def _env() -> dict:
    return child_env()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt")
    data, _ = make_population(PopulationSpec(n_pairs=600, dim=6, prompt_dim=4, context_dim=3), seed=0)
    np.savez(root / "pairs.npz", chosen=data.chosen.numpy(), rejected=data.rejected.numpy(),
             prompt=data.prompt.numpy(), group=data.group, split=data.split)
    start = time.perf_counter()
    result = run_cli("fit", root / "pairs.npz", *FIT_ARGS, "--out", root / "reference")
    seconds = time.perf_counter() - start
    assert result.code == 0, result.stderr
    previous = run_cli("fit", root / "pairs.npz", "--k", "1", "--out", root / "previous")
    assert previous.code == 0, previous.stderr
    return {"data": root / "pairs.npz", "run": root / "reference", "json": _stable(result.json()),
            "seconds": seconds, "previous": root / "previous"}


def _stable(results: dict) -> dict:
    return {k: v for k, v in results.items() if k not in VOLATILE}


def _tensors(run: Path) -> dict:
    return {k: v for k, v in load_file(run / "params.safetensors").items()}


def _same_run(run: Path, reference: Path) -> bool:
    a, b = _tensors(run), _tensors(reference)
    same_params = a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    same_metrics = _stable(json.loads((run / "metrics.json").read_text())) == _stable(
        json.loads((reference / "metrics.json").read_text()))
    return same_params and same_metrics


def _check_absent_or_complete(out: Path, *acceptable: Path) -> str:
    if not out.exists():
        return "absent"
    Fit.load(out)  # complete: loads without error
    assert any(_same_run(out, ok) for ok in acceptable), f"{out} is a run, but not one of {acceptable}"
    return "complete"


def _rerun_matches_reference(reference: dict, out: Path) -> None:
    result = run_cli("fit", reference["data"], *FIT_ARGS, "--out", out)
    assert result.code == 0, result.stderr
    assert _stable(result.json()) == reference["json"]
    assert _same_run(out, reference["run"])
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert leftovers == [], leftovers


@pytest.mark.parametrize("start, seed", RANDOM_KILLS, ids=[f"{s}-seed{n}" for s, n in RANDOM_KILLS])
def test_sigkill_at_a_random_moment_then_rerun(reference, tmp_path, start, seed):
    out = tmp_path / "out"
    if start == "overwrite_previous_run":
        subprocess.run(["cp", "-r", str(reference["previous"]), str(out)], check=True)
    proc = subprocess.Popen([sys.executable, "-m", "bayesmicro.cli.app", "fit", str(reference["data"]), *FIT_ARGS,
                             "--out", str(out)], env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(random.Random(seed).uniform(0.3, 1.0) * reference["seconds"])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    acceptable = [reference["run"]] + ([reference["previous"]] if start == "overwrite_previous_run" else [])
    _check_absent_or_complete(out, *acceptable)
    _rerun_matches_reference(reference, out)


KILL_AT = {
    # the params are written inside the temp folder; SIGKILL before metrics.json
    "after_params_before_metrics": """
import bayesmicro.jobs.fit as cmd  # where `fit` writes its run folder
original = cmd.write_json
def write_json(path, obj):
    if path.name == "metrics.json":
        os.kill(os.getpid(), signal.SIGKILL)
    original(path, obj)
cmd.write_json = write_json
""",
    # overwrite: the old run was renamed away and the new one not yet renamed into place
    "between_the_two_renames_of_an_overwrite": """
import pathlib
original = pathlib.Path.rename
def rename(self, target):
    result = original(self, target)
    if str(target).endswith(".old"):
        os.kill(os.getpid(), signal.SIGKILL)
    return result
pathlib.Path.rename = rename
""",
}


@pytest.mark.parametrize("moment", WORST_MOMENTS)
def test_sigkill_at_the_worst_moment_then_rerun(reference, tmp_path, moment):
    out = tmp_path / "out"
    if moment == "between_the_two_renames_of_an_overwrite":
        subprocess.run(["cp", "-r", str(reference["previous"]), str(out)], check=True)
    script = "import os, signal, sys\n" + KILL_AT[moment] + (
        "from bayesmicro.cli.app import app\n"
        f"app({['fit', str(reference['data']), *FIT_ARGS, '--out', str(out)]!r})\n")
    proc = subprocess.run([sys.executable, "-c", script], env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr  # it really died at that moment
    assert not out.exists()  # absent, never half-written
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # a killed writer's leftovers are there...
    _rerun_matches_reference(reference, out)  # ...and the rerun removes them
