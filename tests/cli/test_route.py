"""`bayesmicro route`: JSON before/after per group, budget curves, bad input exit codes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from bayesmicro.cli.app import app
from tests.routing.test_routing import _reversed_population, _stage1


def test_route_json_reports_before_after_and_curves(tmp_path):
    data, heads, _ = _reversed_population(n=400)
    _stage1(heads).save(tmp_path / "run")
    data.save(tmp_path / "pairs")
    result = CliRunner().invoke(app, ["route", str(tmp_path / "run"), str(tmp_path / "pairs"), "--method",
                                      "posterior,hyre", "--budget", "20", "--budgets", "5,20", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["before"]["by_group"]) == {"g0", "g1"}
    assert report["after"]["posterior"]["accuracy"] > report["before"]["accuracy"] + 0.2
    assert set(report["budget_curve"]["hyre"]) == {"5", "20"} and report["n_labelled"] == 40


def test_route_rejects_unknown_method(tmp_path):
    data, heads, _ = _reversed_population(n=40)
    _stage1(heads).save(tmp_path / "run")
    data.save(tmp_path / "pairs")
    result = CliRunner().invoke(app, ["route", str(tmp_path / "run"), str(tmp_path / "pairs"), "--method", "magic"])
    assert result.exit_code == 2 and "--method must be among" in result.output
