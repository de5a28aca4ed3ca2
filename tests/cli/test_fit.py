import numpy as np
import pytest

from bayesmicro.data.synthetic import PopulationSpec, make_population
from tests.cli.helpers import assert_bad_input, run_cli


def test_default_run_shows_the_single_bt_gap_and_routed_recovery(tmp_path):
    result = run_cli("fit", "--json", "--out", tmp_path / "run")
    assert result.code == 0, result.stderr
    out = result.json()
    assert {"single_bt", "static_mixture", "routed_mixture", "oracle", "fit_seconds"} <= set(out)
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
], ids=["missing_column", "nan_features", "dimension_mismatch", "k_too_large", "no_context", "bad_router"])
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
    assert_bad_input(run_cli("fit", tmp_path / "nope.npz"), "nope.npz", "not found")
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
