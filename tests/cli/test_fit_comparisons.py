"""`bayesmicro fit --format comparisons`: JSON keys, the real CEMS table, bad input exit code."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from bayesmicro.cli.app import app
from tests.common import SHARED_DATA

ARGS = ["--format", "comparisons", "--item1-col", "item1", "--item2-col", "item2", "--outcome-col", "outcome",
        "--user-col", "subject", "--latent", "user"]


def test_fit_comparisons_json_on_cems():
    result = CliRunner().invoke(app, ["fit", str(SHARED_DATA / "cems_choice.csv.gz"), *ARGS,
                                      "--context-cols", "english,french,spanish,italian", "--k", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["n_pairs"] == 3967 and report["n_users"] == 301
    assert round(report["loglik"], 2) >= -2187.85 and report["fit_seconds"] > 0


def test_bad_outcome_exits_2_with_the_row(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("subject,item1,item2,outcome\n1,a,b,1\n1,a,c,x\n")
    result = CliRunner().invoke(app, ["fit", str(path), *ARGS, "--k", "1", "--json"])
    assert result.exit_code == 2
    assert "row 1: 'outcome' is 'x'" in result.output
