"""``bayesmicro fit-store STORE``: a shard store gets ``fit_stream``'s streamed MAP fit, a run folder and clear refusals."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from bayesmicro.cli.app import app
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.data.shards import write_shards
from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.infer.results.mixture import Fit
from bayesmicro.infer.stream import StreamSchedule, fit_stream

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("streamed")
    data, _ = make_population(PopulationSpec(n_pairs=1200, dim=6, prompt_dim=3, context_dim=3, k=2), seed=0)
    data.meta["embedding"] = {"model": "some/backbone", "pooling": "last"}
    data.save(root / "pairs")
    write_shards(data.part("train"), root / "store", rows_per_shard=256)
    return root


def _fit(*args: str):
    return runner.invoke(app, ["fit-store", *map(str, args)])


def test_a_store_gets_the_streamed_fit_and_a_run_folder_eval_scores(store, tmp_path):
    result = _fit(store / "store", "--k", "2", "--router", "context", "--alpha", "0", "--epochs", "30",
                  "--batch-size", "128", "--lr", "0.01", "--out", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["streamed"]["train_pairs"] == 900 and report["streamed"]["steps"] == 30 * 8
    assert "A shard store holds no held-out pairs" in result.stderr
    expected = fit_stream(store / "store", k=2, router="context", alpha=0.0,
                          schedule=StreamSchedule(epochs=30, batch_size=128, lr=0.01))
    run = Fit.load(tmp_path / "run")
    assert torch.equal(run.heads, expected.heads)
    assert run.summary["embedding"] == {"model": "some/backbone", "pooling": "last"}  # export / TRL re-embed with it
    scored = runner.invoke(app, ["eval", str(tmp_path / "run"), str(store / "pairs"), "--json"])
    assert scored.exit_code == 0, scored.output
    held_out = EmbeddedPairs.load(store / "pairs").part("test")
    assert json.loads(scored.stdout)["accuracy"] == pytest.approx(float((run.predict_proba(held_out) > 0.5).double()
                                                                        .mean()))


def test_a_checkpointed_store_fit_resumes_where_it_ended(store, tmp_path):
    args = [store / "store", "--k", "2", "--epochs", "2", "--batch-size", "300", "--checkpoint-dir", tmp_path / "ck",
            "--checkpoint-every", "2", "--json"]
    first, again = _fit(*args, "--out", tmp_path / "first"), _fit(*args, "--out", tmp_path / "again")
    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    done = json.loads(first.stdout)["streamed"]
    assert done["resumed_from_step"] == 0 and json.loads(again.stdout)["streamed"]["resumed_from_step"] == done["steps"]
    assert torch.equal(Fit.load(tmp_path / "first").heads, Fit.load(tmp_path / "again").heads)


@pytest.mark.parametrize("args, message", [
    (["--k", "auto"], "--k must be a whole number of heads for a shard store, got 'auto'"),
    (["--router-prior-scale", "auto"], "--router-prior-scale auto: a shard store gets one streamed MAP fit"),
    (["--router", "user"], "router 'user' reads labels, which a shard store does not keep"),
    (["--device", "tpu"], "--device must be cpu or cuda[:i], got 'tpu'"),
], ids=["k_auto", "scale_auto", "label_router", "device"])
def test_what_a_store_cannot_do_is_one_line_and_exit_2(store, tmp_path, args, message):
    result = _fit(store / "store", *args, "--out", tmp_path / "run")
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [["--inference", "vi"], ["--restarts", "2"], ["--optimizer", "lbfgs"],
                                  ["--select-restart", "evidence"], ["--keep-restarts"]],
                         ids=["inference", "restarts", "optimizer", "select_restart", "keep_restarts"])
def test_a_store_fit_has_no_in_memory_options(store, tmp_path, args):
    """One streamed AdamW MAP fit: the in-memory fits' options are not fit-store's (a usage error, exit 2)."""
    result = _fit(store / "store", *args, "--out", tmp_path / "run")
    assert result.exit_code == 2 and f"No such option: {args[0]}" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [["--device", "cuda"], ["--checkpoint-dir", "ck"]], ids=["device", "checkpoint"])
def test_in_memory_fits_do_not_take_the_store_only_options(store, args):
    result = runner.invoke(app, ["fit", str(store / "pairs"), "--k", "2", *args])
    assert result.exit_code == 2 and f"No such option: {args[0]}" in result.stderr


def test_fit_points_a_store_to_fit_store_and_fit_store_refuses_in_memory_pairs(store, tmp_path):
    result = runner.invoke(app, ["fit", str(store / "store"), "--k", "2", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "is a shard store: fit it with `bayesmicro fit-store`" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    result = _fit(store / "pairs", "--out", tmp_path / "run")
    assert result.exit_code == 2 and "is not a shard store (no manifest.json)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_the_cli_knows_the_store_manifest_by_its_name():
    from bayesmicro.cli.fit_streamed import MANIFEST
    from bayesmicro.data.shards import MANIFEST_FILE

    assert MANIFEST == MANIFEST_FILE
