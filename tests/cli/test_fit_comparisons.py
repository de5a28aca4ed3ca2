"""`bayesmicro fit-comparisons`: JSON keys, the real CEMS table, bad input exit code."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

import bayesmicro

from bayesmicro.cli.app import app
from tests.common import SHARED_DATA

ARGS = ["--item1-col", "item1", "--item2-col", "item2", "--outcome-col", "outcome",
        "--user-col", "subject", "--latent", "user"]


def test_fit_comparisons_json_on_cems():
    result = CliRunner().invoke(app, ["fit-comparisons", str(SHARED_DATA / "cems_choice.csv.gz"), *ARGS,
                                      "--context-cols", "english,french,spanish,italian", "--k", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["n"] == 3967 and report["n_users"] == 301
    assert round(report["loglik"], 2) >= -2187.85 and report["seconds"] > 0


def test_bad_outcome_exits_2_with_the_row(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("subject,item1,item2,outcome\n1,a,b,1\n1,a,c,x\n")
    result = CliRunner().invoke(app, ["fit-comparisons", str(path), *ARGS, "--k", "1", "--json"])
    assert result.exit_code == 2
    assert "row 1: 'outcome' is 'x'" in result.output


def _two_class_table(one_class: bool):
    from tests.infer.results.test_latent_class import _table

    cols = _table(n_users=40, per_user=15)
    if one_class:  # the reversed users' comparisons written the other way round: everyone shares one order
        for row, subject in enumerate(cols["subject"]):
            if int(subject[1:]) % 2 == 0:
                cols["item1"][row], cols["item2"][row] = cols["item2"][row], cols["item1"][row]
    return cols


@pytest.mark.parametrize("one_class, expected_k", [(False, 2), (True, 1)], ids=["two_classes", "one_class"])
def test_k_auto_picks_the_true_number_of_classes_by_bic(tmp_path, one_class, expected_k):
    import csv

    cols = _two_class_table(one_class)
    path = tmp_path / "t.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(cols)
        writer.writerows(zip(*cols.values()))
    result = CliRunner().invoke(app, ["fit-comparisons", str(path), *ARGS, "--context-cols", "lang", "--k", "auto", "--k-max",
                                      "3", "--out", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    choice = report["k_auto"]
    assert report["k"] == choice["k"] == expected_k and len(choice["by_k"]) == 3
    for row in choice["by_k"]:  # BIC = −2·LL + p·log n, p = K·(items − 1) + (K − 1)·(covariates + 1)
        p = row["k"] * 3 + (row["k"] - 1) * 2
        assert row["n_params"] == p
        assert row["bic"] == pytest.approx(-2 * row["loglik"] + p * math.log(report["n"]), rel=1e-12)
    assert report["loglik"] == choice["by_k"][expected_k - 1]["loglik"]
    assert f"--k auto: K = {expected_k}, the lowest BIC over K = 1..3" in result.stderr
    assert bayesmicro.load(tmp_path / "run").k == expected_k


@pytest.mark.parametrize("args, message", [  # options of the reward-head fits: not options of this command
    (["--select-restart", "evidence"], "No such option: --select-restart"),
    (["--keep-restarts"], "No such option: --keep-restarts"),
], ids=["select-restart", "keep-restarts"])
def test_restart_options_of_reward_heads_are_refused_for_a_comparison_table(tmp_path, args, message):
    path = tmp_path / "t.csv"
    path.write_text("subject,item1,item2,outcome\n1,a,b,1\n1,a,c,-1\n")
    result = CliRunner().invoke(app, ["fit-comparisons", str(path), *ARGS, *args, "--json"])
    assert result.exit_code == 2
    assert message in result.output
