"""``bayesmicro fit --inference vi``, ``score`` and ``diagnose`` end to end on a small population."""

import json

import pytest
from typer.testing import CliRunner

from bayesmicro.cli.app import app
from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.infer import Fit
from tests.cli.helpers import run_cli

runner = CliRunner()


@pytest.fixture(scope="module")
def vi_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bayes_cli")
    data, _ = make_population(PopulationSpec(n_pairs=500, dim=4, prompt_dim=2, context_dim=2, k=2), seed=0)
    data.save(root / "pairs")
    result = runner.invoke(app, ["fit-vi", str(root / "pairs"), "--k", "2", "--router", "context",
                                 "--router-posterior", "linearised", "--restarts", "1", "--out", str(root / "run"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    return root, json.loads(result.stdout.strip().splitlines()[-1])


def test_fit_vi_reports_ece_and_saves_draws(vi_run):
    root, metrics = vi_run
    assert 0.0 <= metrics["routed_mixture"]["ece"] < 0.2
    fitted = Fit.load(root / "run")
    assert fitted.n_draws > 1 and fitted.config.inference == "vi"


def test_score_writes_one_row_per_pair(vi_run):
    root, _ = vi_run
    out = root / "scores.parquet"
    result = runner.invoke(app, ["score", str(root / "run"), str(root / "pairs"), "--quantiles", "0.1,0.9",
                                 "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    from datasets import Dataset

    rows = Dataset.from_parquet(str(out))
    assert summary["n"] == len(rows) == 500
    for name in ("prob_mean", "prob_lower", "prob_upper", "risk_averse", "chosen_reward_q0.1", "rejected_reward_sd"):
        assert name in rows.column_names
    row = rows[0]
    assert row["prob_lower"] <= row["prob_mean"] <= row["prob_upper"]
    assert row["chosen_reward_q0.1"] <= row["chosen_reward_q0.9"]
    lines = runner.invoke(app, ["score", str(root / "run"), str(root / "pairs")]).stdout.strip().splitlines()
    assert len(lines) == 500 and json.loads(lines[3])["pair"] == 3


def test_score_of_a_point_estimate_says_its_intervals_are_points(vi_run, tmp_path):
    root, _ = vi_run
    fitted = runner.invoke(app, ["fit", str(root / "pairs"), "--k", "2", "--router", "context", "--restarts", "1",
                                 "--out", str(tmp_path / "map")])
    assert fitted.exit_code == 0, fitted.output
    for run, says in ((tmp_path / "map", True), (root / "run", False)):
        result = runner.invoke(app, ["score", str(run), str(root / "pairs"), "--out", str(tmp_path / "s.parquet"),
                                     "--overwrite"])  # the second replaces the first's file
        assert result.exit_code == 0, result.output
        assert ("is a point estimate (one draw, inference 'map')" in result.stderr) == says
        assert result.stderr.strip().splitlines()[-1] == f"wrote 500 rows to {tmp_path / 's.parquet'}"
        assert "parquet from Arrow" not in result.stderr  # no datasets progress bar


@pytest.mark.parametrize("args, message", [
    (["--quantiles", "0.5,x"], "--quantiles"),
    (["--quantiles", "1.5"], "--quantiles"),
    (["--out", "scores.csv"], ".parquet or .jsonl"),
], ids=["not_a_number", "out_of_range", "bad_suffix"])
def test_score_bad_input_exits_2(vi_run, args, message, tmp_path):
    root, _ = vi_run
    args = [a if a != "scores.csv" else str(tmp_path / a) for a in args]
    result = runner.invoke(app, ["score", str(root / "run"), str(root / "pairs"), *args])
    assert result.exit_code == 2 and message in result.stderr


def test_diagnose_writes_the_reliability_plot(vi_run):
    root, _ = vi_run
    result = run_cli("diagnose", root / "run", root / "pairs", "--json", subprocess=True)  # a process of its own: ArviZ logs once
    assert result.code == 0, result.stderr
    assert "arviz" not in result.stderr  # e.g. "Shape validation failed" from an R-hat of VI's one chain
    report = result.json()
    assert 0 < report["posterior"]["min_ess_bulk"] <= 2 * report["posterior"]["draws"]
    assert report["posterior"]["chains"] == 1 and report["posterior"]["max_rhat"] is None  # VI's Gaussian draws
    assert (root / "run" / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    from bayesmicro.data.embedded import EmbeddedPairs

    assert report["loo"]["n"] == len(EmbeddedPairs.load(root / "pairs").part("train"))
    assert sum(report["loo"]["pareto_k"][key] for key in ("good", "ok", "bad")) == report["loo"]["n"]
    assert set(report["calibration"]["by_group"]) == {"g0", "g1"}
    reloo, bad = report["loo"]["reloo"], report["loo"]["pareto_k"]["bad"]
    redraw = report["loo"].get("redraw")  # a linearised VI run: PSIS redone first for pairs with k > 0.7
    assert (redraw is None) == (bad == 0)
    if redraw:
        assert redraw["draws"] == 4 * Fit.load(root / "run").n_draws and len(redraw["pairs"]) == bad
    still_above = redraw["still_above"] if redraw else 0
    assert len(reloo["refitted"]) == min(10, still_above)
    assert reloo["unreliable"] == still_above - len(reloo["refitted"])


def test_diagnose_says_how_the_flagged_pairs_were_scored():
    from bayesmicro.jobs.diagnose import _loo_line

    loo = {"elpd_loo": -1293.84, "se": 37.01, "p_loo": 108.1, "n": 4500, "pareto_k": {"bad": 117},
           "mixture_is": {"draws": 2560, "still_above": 2},
           "reloo": {"threshold": 0.7, "refitted": [{"pair": 128}, {"pair": 2800}], "unreliable": 0}}
    assert _loo_line(loo) == ("LOO elpd -1293.8 ± 37.0, p_loo 108.1, Pareto k > 0.7: 117 of 4500 at the run's draws "
                              "(mixture IS on 2,560 draws of the leave-one-out mixture: 2 still above; 2 refitted "
                              "and scored exactly, 0 left above 0.7)")
    clean = {**loo, "pareto_k": {"bad": 0}}
    assert _loo_line(clean) == "LOO elpd -1293.8 ± 37.0, p_loo 108.1, Pareto k > 0.7: 0 of 4500"


@pytest.mark.parametrize("option, value, message", [("--max-refits", "-1", "--max-refits must be ≥ 0, got -1"),
                                                     ("--redraw-factor", "0", "--redraw-factor must be ≥ 1, got 0")],
                         ids=["negative_refits", "zero_redraw_factor"])
def test_diagnose_refit_and_redraw_counts_are_checked(vi_run, option, value, message):
    root, _ = vi_run
    result = runner.invoke(app, ["diagnose", str(root / "run"), str(root / "pairs"), option, value])
    assert result.exit_code == 2 and message in result.stderr


def test_diagnose_without_data_needs_a_builtin_run(vi_run):
    root, _ = vi_run
    result = runner.invoke(app, ["diagnose", str(root / "run")])
    assert result.exit_code == 2 and "give DATA" in result.stderr


def test_fit_k_must_be_an_int_or_auto(vi_run):
    root, _ = vi_run
    result = runner.invoke(app, ["fit", str(root / "pairs"), "--k", "three"])
    assert result.exit_code == 2 and "'auto'" in result.stderr


def test_fit_inference_em_and_bad_guide(vi_run):
    root, _ = vi_run
    result = runner.invoke(app, ["fit", str(root / "pairs"), "--k", "2", "--router", "none", "--inference", "em",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["static_mixture"]["accuracy"] > 0.6
    em_run = runner.invoke(app, ["fit", str(root / "pairs"), "--k", "2", "--router", "none", "--inference", "em",
                                 "--out", str(root / "em_run")])
    assert em_run.exit_code == 0, em_run.output
    assert Fit.load(root / "em_run").n_draws > 1  # EM runs carry posterior draws around their optimum
    bad = runner.invoke(app, ["fit-vi", str(root / "pairs"), "--guide", "flow"])
    assert bad.exit_code == 2 and "guide must be one of" in bad.stderr


def test_fit_nuts_runs_the_chains_asked_for_and_reports_r_hat(vi_run):
    root, _ = vi_run
    result = runner.invoke(app, ["fit-nuts", str(root / "pairs"), "--k", "1", "--chains", "2",
                                 "--out", str(root / "nuts_run")])
    assert result.exit_code == 0, result.output
    fitted = Fit.load(root / "nuts_run")
    assert fitted.summary["nuts"]["chains"] == 2 and fitted.n_draws == 2 * fitted.summary["nuts"]["draws"]
    assert 0.9 < fitted.summary["nuts"]["max_r_hat"] < 1.1
    diagnosed = runner.invoke(app, ["diagnose", str(root / "nuts_run"), str(root / "pairs"), "--json"])
    assert diagnosed.exit_code == 0, diagnosed.output
    posterior = json.loads(diagnosed.stdout)["posterior"]
    assert posterior["chains"] == 2 and 0.9 < posterior["max_rhat"] < 1.1  # ArviZ's R-hat across the two chains
    assert f"in 2 chains, largest head R-hat {posterior['max_rhat']:.3f}" in diagnosed.stderr
    bad = runner.invoke(app, ["fit-nuts", str(root / "pairs"), "--chains", "0"])
    assert bad.exit_code == 2 and "--chains must be ≥ 1, got 0" in bad.stderr


def test_fit_keeps_the_draws_warmup_and_mass_matrix_asked_for(vi_run):
    root, _ = vi_run
    common = [str(root / "pairs"), "--k", "2", "--router", "context", "--restarts", "1"]
    nuts = runner.invoke(app, ["fit-nuts"] + common + ["--draws", "30", "--warmup", "20",
                                        "--out", str(root / "nuts_short")])
    assert nuts.exit_code == 0, nuts.output
    fitted = Fit.load(root / "nuts_short")
    assert fitted.n_draws == 30
    assert {key: fitted.summary["nuts"][key] for key in ("draws", "warmup", "mass")} == {
        "draws": 30, "warmup": 20, "mass": "laplace"}
    vi = runner.invoke(app, ["fit-vi"] + common + ["--draws", "50", "--out", str(root / "vi_short")])
    assert vi.exit_code == 0, vi.output
    assert Fit.load(root / "vi_short").n_draws == 50
    assert Fit.load(root / "vi_short").summary["vi"]["router_posterior"] == "refined"  # the default
    for kind in ("linearised", "laplace"):
        other = runner.invoke(app, ["fit-vi"] + common + ["--draws", "50", "--router-posterior", kind,
                                             "--out", str(root / f"vi_{kind}")])
        assert other.exit_code == 0, other.output
        assert Fit.load(root / f"vi_{kind}").summary["vi"]["router_posterior"] == kind
        assert Fit.load(root / f"vi_{kind}").n_draws == 50
    diagnosed = runner.invoke(app, ["diagnose", str(root / "vi_short"), str(root / "pairs"), "--json"])
    assert diagnosed.exit_code == 0, diagnosed.output
    loo = json.loads(diagnosed.stdout)["loo"]
    # a refined run's flagged pairs: its chains replayed on the mixture of leave-one-out posteriors (mixture
    # importance sampling), then the pairs still above 0.7 refitted (the worst 10)
    assert "redraw" not in loo and ("mixture_is" in loo) == (loo["pareto_k"]["bad"] > 0)
    still_above = loo["mixture_is"]["still_above"] if "mixture_is" in loo else 0
    assert len(loo["reloo"]["refitted"]) == min(10, still_above)
    if loo["pareto_k"]["bad"]:
        assert f"Pareto k > 0.7: {loo['pareto_k']['bad']} of {loo['n']} at the run's draws" in diagnosed.stderr
        assert f"mixture IS on {loo['mixture_is']['draws']:,} draws" in diagnosed.stderr
        assert (f"{len(loo['reloo']['refitted'])} refitted and scored exactly, {loo['reloo']['unreliable']} left "
                "above 0.7") in diagnosed.stderr


@pytest.mark.parametrize("args, message", [
    (["--draws", "0"], "--draws must be ≥ 1, got 0"),
    (["--warmup", "-1"], "--warmup must be ≥ 0, got -1"),
    (["--nuts-mass", "dense"], "mass must be one of"),
], ids=["draws", "warmup", "mass"])
def test_fit_rejects_bad_posterior_settings(vi_run, args, message):
    root, _ = vi_run
    bad = runner.invoke(app, ["fit-nuts", str(root / "pairs"), "--out", str(root / "bad")] + args)
    assert bad.exit_code == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (root / "bad").exists()
