"""``bayesmicro.run(config)``: the same job, and the same report, as the command's ``--json``; dispatch by config
class; bad configs are one-line BadInput naming the field; warnings are Python warnings and listed in the report."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import bayesmicro
from bayesmicro import config as config_module
from bayesmicro import jobs
from bayesmicro.config import (DiagnoseConfig, EvalConfig, FitJobConfig, JobConfig, RouteConfig, ScoreConfig)
from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.errors import BadInput, BayesmicroWarning
from tests.cli.helpers import run_cli
from tests.routing.test_routing import _reversed_population, _stage1


def _without_seconds(report: dict) -> dict:
    return {key: value for key, value in report.items() if key != "seconds"}


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    data, _ = make_population(PopulationSpec(n_pairs=300, dim=6, prompt_dim=4, context_dim=3), seed=0)
    path = tmp_path_factory.mktemp("jobs") / "pairs.npz"
    np.savez(path, chosen=data.chosen.numpy(), rejected=data.rejected.numpy(), prompt=data.prompt.numpy(),
             group=data.group, split=data.split)
    return path


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    """A stage-1 run (random prompt router) and pairs with group labels and a context."""
    root = tmp_path_factory.mktemp("route")
    data, heads, _ = _reversed_population(n=200)
    _stage1(heads).save(root / "run")
    data.save(root / "pairs")
    return root / "run", root / "pairs"


def test_a_fit_config_gives_the_report_of_fit_json(npz):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        report = bayesmicro.run(FitJobConfig(data=str(npz), k=2, restarts=1))
        assert torch.get_num_threads() == 2  # the job's own thread count (1) is not left behind
    finally:
        torch.set_num_threads(before)
    cli = run_cli("fit", npz, "--k", "2", "--restarts", "1", "--json")
    assert cli.code == 0, cli.stderr
    assert report["command"] == "fit" and report["version"] == bayesmicro.__version__
    assert isinstance(report["seconds"], float) and isinstance(report["warnings"], list)
    assert _without_seconds(report) == _without_seconds(cli.json())


def test_a_fit_config_writes_the_run_folder_fit_writes(npz, tmp_path):
    report = bayesmicro.run(FitJobConfig(data=str(npz), k=2, restarts=1, router="none", out=str(tmp_path / "api")))
    cli = run_cli("fit", npz, "--k", "2", "--restarts", "1", "--router", "none", "--out", tmp_path / "cli", "--json")
    assert cli.code == 0, cli.stderr
    assert report["out"] == str(tmp_path / "api") and cli.json()["out"] == str(tmp_path / "cli")
    api_files = sorted(p.name for p in (tmp_path / "api").iterdir())
    assert api_files == sorted(p.name for p in (tmp_path / "cli").iterdir()) and "job.json" in api_files
    for name in ("job.json", "config.json"):
        assert (tmp_path / "api" / name).read_text() == (tmp_path / "cli" / name).read_text().replace(
            str(tmp_path / "cli"), str(tmp_path / "api"))
    metrics = json.loads((tmp_path / "api" / "metrics.json").read_text())
    assert metrics["static_mixture"] == report["static_mixture"]


def test_a_fit_vi_config_gives_the_report_of_fit_vi_but_for_its_command(npz):
    args = dict(data=str(npz), k=2, router="none", restarts=1, draws=20)
    report = bayesmicro.run(FitJobConfig(inference="vi", **args))
    cli = run_cli("fit-vi", npz, "--k", "2", "--router", "none", "--restarts", "1", "--draws", "20", "--json").json()
    assert report["command"] == "fit" and cli["command"] == "fit-vi"
    assert {**_without_seconds(report), "command": "fit-vi"} == _without_seconds(cli)


def test_importing_the_jobs_loads_no_torch():
    import subprocess
    import sys

    from tests.common import ROOT, child_env

    code = ("import sys, bayesmicro, bayesmicro.jobs; bayesmicro.run; bayesmicro.FitJobConfig(data='x.npz'); "
            "print([m for m in ('torch', 'pyro', 'transformers', 'datasets') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_route_config_gives_the_report_of_route_json(routed):
    run, pairs = routed
    report = bayesmicro.run(RouteConfig(run=str(run), data=str(pairs), methods="hedge,hyre", budget=10,
                                        budgets="5,10"))
    cli = run_cli("route", run, pairs, "--method", "hedge,hyre", "--budget", "10", "--budgets", "5,10", "--json")
    assert cli.code == 0, cli.stderr
    assert report["command"] == "route" and "budget_curve" in report
    assert _without_seconds(report) == _without_seconds(cli.json())


def test_eval_and_score_configs_give_what_the_commands_print(routed):
    run, pairs = routed
    evaluated = bayesmicro.run(EvalConfig(run=str(run), data=str(pairs), split="train"))
    assert _without_seconds(evaluated) == _without_seconds(run_cli("eval", run, pairs, "--split", "train",
                                                                   "--json").json())
    scored = bayesmicro.run(ScoreConfig(run=str(run), data=str(pairs), quantiles=(0.5,)))
    lines = run_cli("score", run, pairs, "--quantiles", "0.5").stdout.splitlines()
    assert scored["rows"] == [json.loads(line) for line in lines] and scored["quantiles"] == [0.5]


def test_warnings_are_python_warnings_and_listed_in_the_report(tmp_path):
    data, heads, _ = _reversed_population(n=200)
    collapsed = heads.clone()
    collapsed[1] = collapsed[0]  # two heads that predict alike: routing between them changes nothing
    _stage1(collapsed).save(tmp_path / "run")
    data.save(tmp_path / "pairs")
    with pytest.warns(BayesmicroWarning, match="collapsed"):
        report = bayesmicro.run(RouteConfig(run=str(tmp_path / "run"), data=str(tmp_path / "pairs"),
                                            methods="hedge", budget=5))
    assert any("heads 0 and 1 are collapsed" in w for w in report["warnings"]), report["warnings"]
    cli = run_cli("route", tmp_path / "run", tmp_path / "pairs", "--method", "hedge", "--budget", "5", "--json")
    assert cli.json()["warnings"] == report["warnings"]
    assert all(f"warning: {w}" in cli.stderr for w in report["warnings"])


@pytest.mark.parametrize("make, field", [
    (lambda: FitJobConfig(data="x.npz", restarts=0), "restarts"),
    (lambda: FitJobConfig(data="x.npz", k="three"), "k"),
    (lambda: RouteConfig(run="r", data="d", budget=0), "budget"),
    (lambda: ScoreConfig(run="r", data="d", quantiles="0.5,2"), "quantiles"),
    (lambda: ScoreConfig(run="r", data="d", level=1.0), "level"),
    (lambda: DiagnoseConfig(run="r", redraw_factor=2.5), "redraw_factor"),
], ids=["restarts", "k", "budget", "quantiles", "level", "redraw_factor"])
def test_a_bad_config_is_one_line_bad_input_naming_the_field(make, field):
    with pytest.raises(BadInput) as info:
        make()
    message = str(info.value)
    assert "\n" not in message and message.startswith(field) and info.value.argument == field


def test_eval_and_diagnose_configs_word_their_bounds_as_the_cli_does():
    with pytest.raises(BadInput, match=r"^--split must be test, train or all, got 'dev'$"):
        EvalConfig(run="r", data="d", split="dev")
    with pytest.raises(BadInput, match=r"^--max-refits must be ≥ 0, got -1$"):
        DiagnoseConfig(run="r", max_refits=-1)


@pytest.mark.parametrize("thing", [object(), {"job": "FitJobConfig", "k": 2}, "fit", FitJobConfig])
def test_run_refuses_what_is_not_a_job_config(thing):
    with pytest.raises(TypeError, match="bayesmicro.run takes a job config"):
        bayesmicro.run(thing)


def test_every_job_config_has_a_runner_and_is_exported():
    configs = {value for value in vars(config_module).values()
               if isinstance(value, type) and issubclass(value, JobConfig) and value is not JobConfig
               and dataclasses.is_dataclass(value)}
    assert configs == set(jobs.RUNNERS)
    for cls in configs:
        assert getattr(bayesmicro, cls.__name__) is cls and cls.__name__ in bayesmicro.__all__
    assert bayesmicro.run is jobs.run
    commands = {runner.command for runner in jobs.RUNNERS.values()}
    from bayesmicro.cli.app import app

    assert commands <= {info.name for info in app.registered_commands}


def test_the_diagnose_default_redraw_factor_is_the_library_one():
    from bayesmicro.evaluate.loo import REDRAW_FACTOR

    assert DiagnoseConfig().redraw_factor == REDRAW_FACTOR


def test_a_bench_config_checks_the_suite_options_as_the_cli_does(tmp_path):
    from bayesmicro.config import BenchConfig

    with pytest.raises(BadInput, match=r"^--pairs only applies to the scale suite, not synthetic$"):
        BenchConfig(suite="synthetic", options={"pairs": 10})
    with pytest.raises(BadInput, match="^--budgets must be comma-separated integers ≥ 1"):
        BenchConfig(suite="synthetic", options={"budgets": (10, 0)})
    with pytest.raises(BadInput, match="^options: 'budget' is no bench option") as info:
        BenchConfig(suite="synthetic", options={"budget": "10"})
    assert info.value.argument == "options"
    assert BenchConfig(suite="ukp", options={"budgets": "5,20"}).options == {"budgets": (5, 20)}
    report = bayesmicro.run(BenchConfig(suite="scale", seeds=1, out=str(tmp_path / "r"),
                                        options={"pairs": 2000, "dim": 16, "k": 2}))
    assert report["command"] == "bench" and report["out"] == str(tmp_path / "r")
    assert isinstance(report["warnings"], list) and (tmp_path / "r" / "results.json").is_file()
