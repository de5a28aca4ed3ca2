import json

import numpy as np
import pytest

from typer.testing import CliRunner

from bayesmicro.cli.app import app
from bayesmicro.data.synthetic import PopulationSpec, make_population
from tests.cli.helpers import Result, assert_bad_input, run_cli


def test_default_run_shows_the_single_bt_gap_and_routed_recovery(tmp_path):
    result = run_cli("fit", "--json", "--out", tmp_path / "run", subprocess=True)  # a real `bayesmicro` process
    assert result.code == 0, result.stderr
    out = result.json()
    assert {"single_bt", "static_mixture", "routed_mixture", "oracle", "seconds", "command", "version", "warnings"} <= set(out)
    oracle = out["oracle"]["accuracy"]
    assert out["routed_mixture"]["accuracy"] >= oracle - 0.02
    assert out["single_bt"]["accuracy"] <= oracle - 0.10
    assert out["routed_mixture"]["nll"] < out["static_mixture"]["nll"] < out["single_bt"]["nll"] + 1e-9
    assert {"config.json", "params.safetensors", "summary.json", "metrics.json"} <= {
        p.name for p in (tmp_path / "run").iterdir()}


def _npz(path, n=300, **overrides):
    data, _ = make_population(PopulationSpec(n_pairs=n, dim=6, prompt_dim=4, context_dim=3), seed=0)
    arrays = dict(chosen=data.chosen.numpy(), rejected=data.rejected.numpy(), prompt=data.prompt.numpy(),
                  group=data.group, split=data.split)
    arrays.update(overrides)
    np.savez(path, **arrays)
    return path


def test_npz_fit_then_eval(tmp_path):
    data = _npz(tmp_path / "f.npz")
    fitted = run_cli("fit", data, "--k", "2", "--router", "prompt", "--out", tmp_path / "run", "--json")
    assert fitted.code == 0, fitted.stderr
    out = fitted.json()
    assert set(out["routed_mixture"]) >= {"accuracy", "nll", "brier", "n", "by_group"}
    assert out["evaluated_on"] == "test"
    evaluated = run_cli("eval", tmp_path / "run", data, "--json")
    assert evaluated.code == 0, evaluated.stderr
    assert evaluated.json()["accuracy"] == pytest.approx(out["routed_mixture"]["accuracy"])


@pytest.mark.parametrize("overrides, args, fragments", [
    (dict(prompt=None), (), ("missing key", "prompt")),
    (dict(chosen=np.full((300, 6), np.nan)), (), ("'chosen' row 0, column 0", "not finite")),
    (dict(rejected=np.zeros((300, 5))), (), ("'rejected' has shape",)),
    ({}, ("--k", "1000"), ("k = 1000 is larger than the number of training pairs",)),
    ({}, ("--router", "context"), ("router 'context' needs a 'context'",)),
    ({}, ("--router", "sideways"), ("router must be one of",)),
    ({}, ("--router-prior-scale", "wide"), ("--router-prior-scale expects a number or 'auto', got 'wide'",)),
], ids=["missing_column", "nan_features", "dimension_mismatch", "k_too_large", "no_context", "bad_router",
        "bad_router_prior_scale"])
def test_bad_input_exits_2_with_one_line_and_no_run_folder(tmp_path, overrides, args, fragments):
    arrays = {k: v for k, v in overrides.items() if v is not None}
    path = _npz(tmp_path / "bad.npz", **arrays)
    if any(v is None for v in overrides.values()):
        contents = dict(np.load(path))
        for key in [k for k, v in overrides.items() if v is None]:
            contents.pop(key)
        np.savez(path, **contents)
    result = run_cli("fit", path, *args, "--out", tmp_path / "run", "--json")
    assert_bad_input(result, *fragments)
    assert not (tmp_path / "run").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.npz"]


def test_missing_and_empty_files(tmp_path):
    assert_bad_input(run_cli("fit", tmp_path / "nope.npz", subprocess=True), "nope.npz", "not found")
    (tmp_path / "empty.npz").write_bytes(b"")
    assert_bad_input(run_cli("fit", tmp_path / "empty.npz"), "empty.npz")


def test_eval_rejects_features_of_another_dimension(tmp_path):
    data = _npz(tmp_path / "f.npz")
    assert run_cli("fit", data, "--k", "1", "--out", tmp_path / "run").code == 0
    other = tmp_path / "other.npz"
    np.savez(other, chosen=np.zeros((5, 9)), rejected=np.zeros((5, 9)), prompt=np.zeros((5, 4)))
    assert_bad_input(run_cli("eval", tmp_path / "run", other, "--split", "all"), "9 columns", "expects 6")


def test_eval_rejects_a_tampered_run(tmp_path):
    data = _npz(tmp_path / "f.npz")
    assert run_cli("fit", data, "--k", "2", "--out", tmp_path / "run").code == 0
    (tmp_path / "run" / "params.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    assert_bad_input(run_cli("eval", tmp_path / "run", data), "params.safetensors")


def _npz_without_split(path, n=300, seed=0):
    data, _ = make_population(PopulationSpec(n_pairs=n, dim=6, prompt_dim=4, context_dim=3), seed=seed)
    np.savez(path, chosen=data.chosen.numpy(), rejected=data.rejected.numpy(), prompt=data.prompt.numpy(),
             group=data.group)
    return path


def _in_process(*args) -> Result:
    """The CLI in this process (these tests call it often; a subprocess spends ~3 s importing torch)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    return Result(result.exit_code, result.stdout, result.stderr)


def test_the_split_fit_draws_is_the_one_eval_score_and_diagnose_use(tmp_path):
    data = _npz_without_split(tmp_path / "f.npz")
    fitted = _in_process("fit", data, "--k", "2", "--out", tmp_path / "run", "--json")
    assert fitted.code == 0, fitted.stderr
    held_out = fitted.json()["routed_mixture"]
    assert held_out["n"] == 60 and (tmp_path / "run" / "split.json").exists()
    assert "held out 60 of 300 pairs at random" in fitted.stderr
    evaluated = _in_process("eval", tmp_path / "run", data, "--json")
    assert "60 of 300 pairs held out" in evaluated.stderr
    assert evaluated.json()["evaluated_on"] == "test" and evaluated.json()["n"] == 60
    assert evaluated.json()["accuracy"] == pytest.approx(held_out["accuracy"])
    assert evaluated.json()["nll"] == pytest.approx(held_out["nll"])
    assert evaluated.json()["ece"] == pytest.approx(held_out["ece"]) and "routed_mixture" in evaluated.stderr
    assert _in_process("eval", tmp_path / "run", data, "--split", "train", "--json").json()["n"] == 240
    rows = _in_process("score", tmp_path / "run", data).stdout.splitlines()
    assert sum(json.loads(row)["split"] == "test" for row in rows) == 60
    diagnosed = _in_process("diagnose", tmp_path / "run", data, "--json").json()
    assert diagnosed["evaluated_on"] == "test" and diagnosed["calibration"]["n"] == 60


def test_other_data_without_a_split_is_scored_whole_and_said_so(tmp_path):
    assert _in_process("fit", _npz_without_split(tmp_path / "f.npz"), "--k", "2", "--out", tmp_path / "run").code == 0
    other = _npz_without_split(tmp_path / "other.npz", seed=1)
    evaluated = _in_process("eval", tmp_path / "run", other, "--json")
    assert "is not the data" in evaluated.stderr
    assert evaluated.json()["evaluated_on"] == "all" and evaluated.json()["n"] == 300
    assert _in_process("fit", other, "--k", "2", "--test-fraction", "0", "--out", tmp_path / "run2").code == 0
    assert not (tmp_path / "run2" / "split.json").exists()
    whole = _in_process("eval", tmp_path / "run2", other, "--json")
    assert "recorded none: scoring all 300 pairs" in whole.stderr and whole.json()["evaluated_on"] == "all"


def test_k_auto_chooses_on_training_pairs_only(tmp_path):
    data, _ = make_population(PopulationSpec(n_pairs=800, dim=6, prompt_dim=4, context_dim=3, k=2), seed=0)
    data.save(tmp_path / "pairs")
    result = run_cli("fit", tmp_path / "pairs", "--k-max", "3", "--router", "context", "--alpha", "0",
                     "--prior-scale", "1", "--router-prior-scale", "0.3", "--json")
    assert result.code == 0, result.stderr
    choice = result.json()["capacity"]
    assert choice["chosen"] == {"k": 2, "prior_scale": 1.0, "router_prior_scale": 0.3, "alpha": 0.0}, choice["table"]
    n_train = int((data.split == "train").sum())
    assert choice["validation_pairs"] + choice["fitting_pairs"] == n_train
    assert {row["settings"]["k"] for row in choice["table"].values()} == {1, 2, 3}
    assert {"routed_mixture", "single_bt"} <= set(result.json())  # one BT scored beside the chosen mixture
    assert f"--k auto: K = 2, head prior sd 1, router prior sd 0.3, alpha 0 — validation NLL on " \
           f"{choice['validation_pairs']} training pairs held out by pair" in result.stderr


def test_a_damaged_split_file_is_one_line_and_exit_2(tmp_path):
    data = _npz_without_split(tmp_path / "f.npz")
    assert _in_process("fit", data, "--k", "1", "--out", tmp_path / "run").code == 0
    (tmp_path / "run" / "split.json").write_text('{"format": "bayesmicro.run_split/1", "n": 300, "test": [300]}')
    assert_bad_input(run_cli("eval", tmp_path / "run", data), "split.json", "expected an integer 'n'")


def test_router_prior_scale_auto_chooses_on_training_pairs_and_fits_with_the_choice(tmp_path):
    data = _npz_without_split(tmp_path / "f.npz", n=400)
    result = _in_process("fit", data, "--k", "2", "--router-prior-scale", "auto", "--restarts", "1", "--out",
                         tmp_path / "run", "--json")
    assert result.code == 0, result.stderr
    choice = result.json()["router_prior_scale_auto"]
    assert choice["holdout_pairs"] == round(0.3 * 320)
    assert choice["compare"][f"scale={choice['router_prior_scale']}"]["rank"] == 0
    assert f"--router-prior-scale auto: sd {choice['router_prior_scale']} (largest held-out ELPD on 96 of the " \
           "training pairs)" in result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["router_prior_scale"] == choice["router_prior_scale"]


@pytest.mark.parametrize("scale, hinted", [("1.0", True), ("0.03", False)], ids=["weak_prior", "strong_prior"])
def test_a_router_that_memorises_noise_prompts_gets_a_hint(tmp_path, scale, hinted):
    data, _ = make_population(PopulationSpec(n_pairs=400, dim=6, prompt_dim=4, context_dim=3, k=2), seed=0)
    noise = np.random.default_rng(1).standard_normal((400, 64)).astype(np.float32)  # says nothing about the head
    np.savez(tmp_path / "noise.npz", chosen=data.chosen.numpy(), rejected=data.rejected.numpy(), prompt=noise,
             split=data.split)
    result = _in_process("fit", tmp_path / "noise.npz", "--k", "2", "--router-prior-scale", scale, "--restarts", "1",
                         "--json")
    assert result.code == 0, result.stderr
    row = result.json()["routed_mixture"]
    assert (row["nll"] - row["train_nll"] > 0.1) == hinted
    assert ("router may be memorising" in result.stderr) == hinted


def _reversed_groups_npz(path, prompt=None):
    """Two groups with reversed preferences; prompts (noise by default) say nothing about the group."""
    from tests.routing.test_routing import _reversed_population

    data, _, _ = _reversed_population(n=400)
    np.savez(path, chosen=data.chosen.numpy(), rejected=data.rejected.numpy(),
             prompt=data.prompt.numpy() if prompt is None else prompt, group=data.group)
    return path


def test_a_router_on_group_labels_runs_through_eval_score_and_route(tmp_path):
    data = _reversed_groups_npz(tmp_path / "f.npz")
    fitted = _in_process("fit", data, "--k", "2", "--router", "group", "--restarts", "1", "--out", tmp_path / "run",
                         "--json")
    assert fitted.code == 0, fitted.stderr
    row = fitted.json()["routed_mixture"]
    assert row["accuracy"] > 0.8 and row["router_weight_sd"] > 0.3
    assert "same weights" not in fitted.stderr and "memorising" not in fitted.stderr
    evaluated = _in_process("eval", tmp_path / "run", data, "--json")
    assert evaluated.json()["accuracy"] == pytest.approx(row["accuracy"])
    assert _in_process("score", tmp_path / "run", data).code == 0
    routed = _in_process("route", tmp_path / "run", data, "--method", "posterior,hedge", "--budget", "20", "--json")
    assert routed.code == 0, routed.stderr
    assert routed.json()["by"] == "group" and routed.json()["after"]["posterior"]["accuracy"] > 0.8


def test_a_router_whose_input_says_nothing_gets_a_hint_naming_the_label(tmp_path):
    data = _reversed_groups_npz(tmp_path / "f.npz", prompt=np.ones((400, 3), dtype=np.float32))
    result = _in_process("fit", data, "--k", "2", "--restarts", "1", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["routed_mixture"]["router_weight_sd"] < 0.01
    assert "gives every held-out pair the same weights" in result.stderr and "--router group" in result.stderr


def test_route_routes_per_user_when_the_data_has_only_users(tmp_path):
    with np.load(_reversed_groups_npz(tmp_path / "g.npz")) as arrays:
        np.savez(tmp_path / "f.npz", **{k: v for k, v in arrays.items() if k != "group"}, user=arrays["group"])
    data = tmp_path / "f.npz"
    assert _in_process("fit", data, "--k", "2", "--router", "user", "--restarts", "1", "--out",
                       tmp_path / "run").code == 0
    routed = _in_process("route", tmp_path / "run", data, "--method", "posterior", "--budget", "10", "--json")
    assert routed.code == 0, routed.stderr
    assert routed.json()["by"] == "user"
    missing = _in_process("route", tmp_path / "run", data, "--by", "group", "--method", "posterior")
    assert missing.code == 2 and missing.stdout == ""
    assert "routing needs a 'group' label" in missing.stderr and "(it has 'user' labels: --by user)" in missing.stderr


def test_stderr_prints_paths_as_written_on_one_line(tmp_path):
    folder = tmp_path / ("[exp1] " + "long-name-" * 8)  # rich markup would eat "[exp1]"; 80 columns would wrap
    folder.mkdir()
    data = _npz_without_split(folder / "f.npz")
    result = _in_process("fit", data, "--k", "1")
    assert result.code == 0, result.stderr
    assert f"{data} has no split column: held out 60 of 300 pairs at random" in result.stderr.splitlines()[0]


def test_select_restart_evidence_keeps_the_largest_evidence_and_records_it(tmp_path):
    data = _npz_without_split(tmp_path / "f.npz", n=200)
    result = _in_process("fit", data, "--k", "2", "--restarts", "3", "--select-restart", "evidence", "--out",
                         tmp_path / "run", "--json")
    assert result.code == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["restart_select"] == "evidence"
    kept = max(summary["restarts"], key=lambda row: row["log_evidence"])
    assert summary["train_loglik"] == pytest.approx(kept["train_loglik"])


@pytest.mark.parametrize("args, fragment", [
    (("--select-restart", "best"), "--select-restart must be one of loglik, evidence, got 'best'"),
    (("--select-restart", "evidence", "--k", "1"), "select='evidence' compares the Laplace evidence"),
], ids=["unknown-rule", "single-bt"])
def test_select_restart_refuses_what_it_cannot_compare(tmp_path, args, fragment):
    assert_bad_input(run_cli("fit", _npz_without_split(tmp_path / "f.npz", n=100), *args), fragment)
