"""Every command's ``--json`` is one object with the keys all commands share (docs/cli.md): ``command``, ``version``,
``seconds``, ``warnings``; and the same names for the same things (accuracy, nll, brier, ece, n; ``by_group``)."""

from __future__ import annotations

import csv
import json
import numbers

import numpy as np
import pytest
from typer.testing import CliRunner

import bayesmicro
from bayesmicro.cli.app import app
from bayesmicro.data.shards import write_shards
from bayesmicro.data.synthetic import PopulationSpec, make_population
from tests.tiny_llama import embedded, embedder, run_dirs, tiny_llama  # noqa: F401  (fixtures)

runner = CliRunner()
METRICS = {"accuracy", "nll", "brier"}
RENAMED = {"fit_seconds": "seconds", "n_pairs": "n"}  # names no command's JSON uses any more


def _json(*args) -> dict:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout  # one object on stdout; tables and messages on stderr
    return json.loads(lines[0])


def _check_common(report: dict, command: str) -> None:
    assert report["command"] == command and report["version"] == bayesmicro.__version__
    assert isinstance(report["warnings"], list) and all(isinstance(w, str) for w in report["warnings"])
    seconds = report["seconds"]
    total = seconds["total"] if isinstance(seconds, dict) else seconds
    assert isinstance(total, numbers.Real) and total >= 0
    _check_names(report)


def _check_names(obj, path: str = "") -> None:
    """Metric rows carry accuracy, nll, brier and n as numbers, per-group rows under by_group; no old names."""
    if isinstance(obj, dict):
        for old, new in RENAMED.items():
            assert old not in obj, f"{path}.{old}: the common name is {new}"
        if METRICS <= set(obj):
            assert isinstance(obj["n"], int) and all(isinstance(obj[m], float) for m in METRICS), path
            for group, row in obj.get("by_group", {}).items():
                assert METRICS <= set(row), f"{path}.by_group.{group}"
        for key, value in obj.items():
            _check_names(value, f"{path}.{key}" if path else key)
    elif isinstance(obj, list):
        for value in obj:
            _check_names(value, path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("schema")
    data, _ = make_population(PopulationSpec(n_pairs=200, dim=4, prompt_dim=3, context_dim=2, k=2), seed=0)
    data.save(root / "pairs")
    write_shards(data.part("train"), root / "store", rows_per_shard=64)
    rng = np.random.default_rng(0)
    with (root / "table.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["subject", "item1", "item2", "outcome"])
        for row in range(120):
            a, b = rng.choice(["a", "b", "c"], 2, replace=False)
            writer.writerow([f"s{row % 12}", a, b, int(rng.choice([1, -1]))])
    return root


@pytest.fixture(scope="module")
def fitted(tiny):
    report = _json("fit", tiny / "pairs", "--k", "2", "--router", "context", "--restarts", "1",
                   "--out", tiny / "run", "--json")
    return tiny / "run", report


def test_fit(fitted):
    run, report = fitted
    _check_common(report, "fit")
    assert {"routed_mixture", "optimisation", "evaluated_on", "out"} <= set(report)
    assert "ece" in report["routed_mixture"] and "by_group" in report["routed_mixture"]
    assert json.loads((run / "job.json").read_text())["k"] == 2  # the run folder keeps its job config


def test_fit_built_in_and_fit_k_auto(tiny):
    _check_common(_json("fit", tiny / "pairs", "--k", "auto", "--k-max", "2", "--restarts", "1", "--json"), "fit")


def test_fit_vi_and_fit_nuts(tiny):
    vi = _json("fit-vi", tiny / "pairs", "--k", "2", "--router", "none", "--restarts", "1", "--draws", "20", "--json")
    _check_common(vi, "fit-vi")
    nuts = _json("fit-nuts", tiny / "pairs", "--k", "1", "--draws", "20", "--warmup", "20", "--json")
    _check_common(nuts, "fit-nuts")


def test_fit_store_and_fit_comparisons(tiny):
    store = _json("fit-store", tiny / "store", "--k", "2", "--epochs", "1", "--batch-size", "64", "--json")
    _check_common(store, "fit-store")
    table = _json("fit-comparisons", tiny / "table.csv", "--k", "1", "--restarts", "1", "--json")
    _check_common(table, "fit-comparisons")
    assert table["n"] == 120


def test_eval_score_diagnose_route(fitted, tiny):
    run, _ = fitted
    _check_common(_json("eval", run, tiny / "pairs", "--json"), "eval")
    _check_common(_json("score", run, tiny / "pairs", "--json"), "score")
    _check_common(_json("diagnose", run, tiny / "pairs", "--max-refits", "0", "--json"), "diagnose")
    routed = _json("route", run, tiny / "pairs", "--method", "hedge", "--budget", "5", "--json")
    _check_common(routed, "route")
    assert "by_group" in routed["before"]


def test_embed_and_export(tmp_path, run_dirs, tiny_llama):  # noqa: F811
    (tmp_path / "pairs.jsonl").write_text("".join(
        json.dumps({"prompt": f"question {i}", "chosen": f"a good answer {i}", "rejected": f"no {i}"}) + "\n"
        for i in range(8)))
    embedded_report = _json("embed", tmp_path / "pairs.jsonl", "--model", tiny_llama, "--out", tmp_path / "emb",
                            "--cache-dir", tmp_path / "cache", "--device", "cpu", "--json")
    _check_common(embedded_report, "embed")
    assert embedded_report["n"] == 8 and embedded_report["out"] == str(tmp_path / "emb")
    exported = _json("export", run_dirs["prompt"], "--backbone", tiny_llama, "--weights", "static", "--out",
                     tmp_path / "export", "--json")
    _check_common(exported, "export")


def test_bench(tmp_path):
    report = _json("bench", "scale", "--pairs", "2000", "--dim", "16", "--k", "2", "--out", tmp_path / "r", "--json")
    _check_common(report, "bench")
    assert report["out"] == str(tmp_path / "r")
