"""`bayesmicro route`: JSON before/after per group, budget curves, bad input exit codes."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from bayesmicro.cli.app import app
from tests.cli.helpers import run_cli
from tests.common import assert_close
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
    result = CliRunner().invoke(app, ["route", str(tmp_path / "run"), str(tmp_path / "no_such_pairs"), "--method",
                                      "hedge"])
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
    wall_time = lambda out: {key: value for key, value in json.loads(out).items() if key != "seconds"}  # noqa: E731
    assert wall_time(derived.stdout) == wall_time(given.stdout)
    assert json.loads(derived.stdout)["after"]["posterior"]["accuracy"] > 0.8


def test_route_restart_context_routes_the_kept_restart_that_separates_the_groups(tmp_path):
    data, _, _ = _reversed_population(n=400)
    data.save(tmp_path / "pairs")
    fitted = CliRunner().invoke(app, ["fit", str(tmp_path / "pairs"), "--k", "2", "--router", "context", "--restarts",
                                      "3", "--keep-restarts", "--out", str(tmp_path / "run")])
    assert fitted.exit_code == 0, fitted.output

    def route(run, *args):
        result = CliRunner().invoke(app, ["route", str(run), str(tmp_path / "pairs"), "--method", "posterior,hyre",
                                          "--budget", "20", "--budgets", "5,20", "--json", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])

    chosen = route(tmp_path / "run", "--restart", "context")
    record = chosen["restart_choice"]
    scores = record["context_information"]
    assert len(scores) == 3 and record["chosen"] == int(np.argmax(scores)) and record["rule"] == "context"
    direct = route(tmp_path / "run" / "restarts" / str(record["chosen"]))  # that restart as a run of its own
    assert direct["restart_choice"] == {"rule": "kept"}
    assert chosen["after"] == direct["after"]
    # each curve budget chooses on its own labelled pairs; restarts that reached the same mode can tie, and then
    # either gives the same figures up to the optimiser's tolerance
    assert_close(_numbers(chosen["budget_curve"]), _numbers(direct["budget_curve"]), atol=1e-3)


def _numbers(tree) -> list[float]:
    """Every number in a nested JSON value, in key order."""
    if isinstance(tree, dict):
        return [x for key in sorted(tree) for x in _numbers(tree[key])]
    return [float(tree)] if isinstance(tree, (int, float)) else []


@pytest.mark.parametrize("args, fragment", [
    (["--restart", "context"], "--restart context chooses among the run's restarts, and this run kept none: fit it "
                               "with --keep-restarts"),
    (["--restart", "best"], "--restart must be one of kept, context, got 'best'"),
], ids=["no-restarts-kept", "unknown-rule"])
def test_route_restart_refusals_are_one_line(tmp_path, args, fragment):
    data, heads, _ = _reversed_population(n=40)
    _stage1(heads).save(tmp_path / "run")
    data.save(tmp_path / "pairs")
    result = CliRunner().invoke(app, ["route", str(tmp_path / "run"), str(tmp_path / "pairs"), *args])
    assert result.exit_code == 2 and fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_route_defaults_to_hierarchical_offsets_with_scales_from_the_training_users(tmp_path):
    from tests.routing.test_hierarchical import user_population

    pairs, _ = user_population(n_users=40, pairs_per_user=60, offset_sd=0.6, seed=2)
    pairs.save(tmp_path / "pairs")
    assert run_cli("fit", tmp_path / "pairs", "--k", "1", "--out", tmp_path / "run").code == 0
    result = run_cli("route", tmp_path / "run", tmp_path / "pairs", "--by", "user", "--budget", "20", "--json")
    assert result.code == 0, result.stderr
    out = result.json()
    assert set(out["after"]) == {"hierarchical"} and out["unit_scales"]["units"] == 40
    assert 0.2 < out["unit_scales"]["head"] < 1.0
    assert out["after"]["hierarchical"]["nll"] < out["before"]["nll"]
    assert "hierarchical: prior sd of a user's head offsets" in result.stderr


def test_route_joint_refits_the_population_with_the_offsets_of_seen_users(tmp_path):
    from tests.routing.test_hierarchical import user_population

    pairs, _ = user_population(n_users=30, pairs_per_user=40, offset_sd=0.8, seed=6)
    pairs.save(tmp_path / "pairs")
    assert run_cli("fit", tmp_path / "pairs", "--k", "1", "--out", tmp_path / "run").code == 0
    result = run_cli("route", tmp_path / "run", tmp_path / "pairs", "--by", "user", "--budget", "1000",
                     "--method", "hierarchical,joint", "--json")
    assert result.code == 0, result.stderr
    out = result.json()
    assert set(out["after"]) == {"hierarchical", "joint"} and out["unit_scales"]["units"] == 30
    assert out["after"]["joint"]["nll"] < out["before"]["nll"]
    assert out["after"]["joint"]["nll"] != out["after"]["hierarchical"]["nll"]
