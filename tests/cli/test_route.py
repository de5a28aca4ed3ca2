"""`bayesmicro route`: JSON before/after per group, budget curves, bad input exit codes."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
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
    assert "fewer training pairs" not in result.stderr


def test_a_budget_above_a_groups_training_pairs_is_said(tmp_path):
    data, heads, _ = _reversed_population(n=120)
    _stage1(heads).save(tmp_path / "run")
    data.save(tmp_path / "pairs")
    result = CliRunner().invoke(app, ["route", str(tmp_path / "run"), str(tmp_path / "pairs"), "--method", "hyre",
                                      "--budget", "1000", "--json"])
    assert result.exit_code == 0, result.output
    groups, counts = np.unique(data.part("train").group, return_counts=True)
    assert json.loads(result.stdout)["n_labelled"] == counts.sum() == 60
    assert (f"--budget 1000: 2 of 2 groups have fewer training pairs (fewest {counts.min()}, group "
            f"{groups[counts.argmin()]}); all of theirs are labelled") in result.stderr


def test_route_rejects_unknown_method(tmp_path):
    data, heads, _ = _reversed_population(n=40)
    _stage1(heads).save(tmp_path / "run")
    data.save(tmp_path / "pairs")
    result = CliRunner().invoke(app, ["route", str(tmp_path / "run"), str(tmp_path / "pairs"), "--method", "magic"])
    assert result.exit_code == 2 and "--method must be among" in result.output


def test_route_refuses_a_one_head_run_before_reading_data(tmp_path):
    _, heads, _ = _reversed_population(n=40)
    _stage1(heads[:1], router="none").save(tmp_path / "run")
    result = CliRunner().invoke(app, ["route", str(tmp_path / "run"), str(tmp_path / "no_such_pairs")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: {tmp_path / 'run'}: the run has one head (K = 1): stage-2 routing "
                                     "re-weights heads and needs K ≥ 2 (fit with --k 2 or more)")


def test_context_from_group_routes_on_the_one_hot_of_the_group(tmp_path):
    data, heads, _ = _reversed_population(n=400)
    _stage1(heads).save(tmp_path / "run")
    replace(data, context=None).save(tmp_path / "no_context")
    data.with_label_context("group").save(tmp_path / "one_hot")
    args = ["--method", "hedge,posterior", "--budget", "20", "--json"]
    missing = CliRunner().invoke(app, ["route", str(tmp_path / "run"), str(tmp_path / "no_context"), *args])
    assert missing.exit_code == 2 and "--context-from group" in missing.stderr
    derived = CliRunner().invoke(app, ["route", str(tmp_path / "run"), str(tmp_path / "no_context"),
                                       "--context-from", "group", *args])
    given = CliRunner().invoke(app, ["route", str(tmp_path / "run"), str(tmp_path / "one_hot"), *args])
    assert derived.exit_code == 0, derived.output
    assert json.loads(derived.stdout) == json.loads(given.stdout)
    assert json.loads(derived.stdout)["after"]["posterior"]["accuracy"] > 0.8
