"""The CLI's shape: --help without torch, choices listed, small commands, shared option defaults, one-line errors,
one job config shared with the API, bench output outside the current folder."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bayesmicro
from bayesmicro.cli.app import app
from bayesmicro.cli.common import option_flags
from bayesmicro.config import FitJobConfig, RouteConfig
from bayesmicro.errors import BadInput
from tests.cli.helpers import ROOT, assert_bad_input, run_cli
from tests.common import child_env

CLI = ROOT / "bayesmicro" / "cli"
HEAVY = ("torch", "pyro", "transformers", "datasets")


def _commands() -> dict:
    return {info.name: info.callback for info in app.registered_commands}


def test_importing_the_cli_and_the_package_loads_no_torch():
    code = ("import sys, bayesmicro, bayesmicro.cli.app; "
            "print([m for m in %r if m in sys.modules]); print(type(bayesmicro.evaluate).__name__ "
            "if 'evaluate' in dir(bayesmicro) else 'lazy')" % (HEAVY,))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "[]"


def test_no_public_name_shadows_a_subpackage():
    import bayesmicro.evaluate

    subpackages = {p.name for p in (ROOT / "bayesmicro").iterdir() if (p / "__init__.py").is_file()}
    assert not subpackages & set(bayesmicro.__all__)
    assert inspect.ismodule(bayesmicro.evaluate)
    assert bayesmicro.score_predictions is bayesmicro.evaluate.metrics.score


def test_help_and_version_run_without_torch():
    for args in (["--help"], ["fit", "--help"], ["--version"]):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "bayesmicro.cli.app", *args],
                              capture_output=True, text=True, env=child_env(COLUMNS="200"), cwd=ROOT, timeout=120)
        assert proc.returncode == 0, proc.stderr
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
        assert not imported & set(HEAVY), args


def test_help_lists_choices_and_defaults():
    result = CliRunner().invoke(app, ["fit", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for text in ("[map|vi|nuts|em]", "[pair|group|user]", "[auto|lbfgs|adam]", "[loglik|evidence]",
                 "[none|prompt|context|user|group]", "default: 0.2", "Capacity (--k auto)", "Output"):
        assert text in result.stdout, text
    route = CliRunner().invoke(app, ["route", "--help"], env={"COLUMNS": "200"}).stdout
    assert "[hierarchical|joint|hedge|posterior|amortized|hyre]" in route and "[eer|epig|eig]" in route


def test_every_command_is_small_and_shares_option_defaults():
    defaults: dict[str, dict] = {}
    for name, fn in _commands().items():
        flags = option_flags(fn)
        assert len(flags) <= 20, (name, len(flags))
        for parameter, flag in flags.items():
            defaults.setdefault(flag, {})[name] = inspect.signature(fn).parameters[parameter].default.default
    for flag in ("--test-fraction", "--seed", "--json", "--overwrite"):
        assert len(set(map(str, defaults[flag].values()))) == 1, (flag, defaults[flag])
    assert defaults["--test-fraction"]["route"] == defaults["--test-fraction"]["fit"] == 0.2


def test_no_function_in_the_cli_is_over_60_lines():
    for path in CLI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno + 1 <= 60, f"{path.name}:{node.name}"


@pytest.mark.parametrize("args, message", [
    (["fit", "--validate-by", "topic", "x.npz"], "--validate-by must be one of pair, group, user, got 'topic'"),
    (["fit", "--test-fraction", "1.5", "x.npz"], "--test-fraction must be"),
    (["fit", "--k", "auto"], "--k auto chooses capacity on DATA's training pairs"),
    (["fit", "--k", "three", "x.npz"], "--k expects a positive integer or 'auto', got 'three'"),
    (["fit-vi", "--guide", "flow"], "--guide must be one of normal, lowrank, got 'flow'"),
    (["route", "run", "data", "--method", "magic"], "--method must be among"),
    (["route", "run", "data", "--by", "topic"], "--by must be 'group' or 'user', got 'topic'"),
    (["--threads", "0", "fit"], "--threads must be ≥ 1, got 0"),
], ids=["validate_by", "test_fraction", "k_auto_builtin", "k_word", "guide", "method", "by", "threads"])
def test_bad_options_are_one_line_and_exit_2_before_any_work(args, message):
    assert_bad_input(run_cli(*args, timeout=120), message)


def test_the_api_and_the_cli_share_one_job_config():
    job = FitJobConfig(data="x.npz", k="auto", validate_by="user")
    assert job.auto_k and job.to_dict()["validate_by"] == "user" and job.test_fraction == 0.2
    with pytest.raises(BadInput, match="^test_fraction must be") as info:
        FitJobConfig(data="x.npz", test_fraction=1.0)
    assert info.value.argument == "test_fraction"
    assert RouteConfig(run="r", data="d", methods="hedge,hyre").methods == ("hedge", "hyre")
    assert RouteConfig().test_fraction == FitJobConfig().test_fraction


def test_the_api_fits_k_auto():
    from tests.common import small_pairs

    fitted = bayesmicro.fit(small_pairs(n=60), k="auto", router="none", restarts=1)
    assert "capacity" in fitted.summary and 1 <= fitted.config.k <= 5


def test_bench_writes_to_the_user_cache_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    before = set(Path(tmp_path).iterdir())
    result = CliRunner().invoke(app, ["bench", "scale", "--pairs", "2000", "--dim", "16", "--k", "2", "--json"])
    assert result.exit_code == 0, result.output
    where = tmp_path / "cache" / "bayesmicro" / "bench" / "scale"
    assert json.loads(result.stdout)["out"] == str(where) and (where / "results.json").is_file()
    assert f"wrote {where}/results.json" in result.stderr
    assert set(Path(tmp_path).iterdir()) - before == {tmp_path / "cache"}  # nothing in the current folder
