"""The ``helpsteer2`` and ``rpr`` suites end to end on tiny tables in the protocols' schemas, with a tiny random
Llama built from a config (the real numbers need the hub and a GPU)."""

from __future__ import annotations

import gzip
import json
import random

import datasets
import numpy as np
import pytest
import torch

from bayesmicro.bench import SUITES, helpsteer2, paper_protocol, rpr
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.data.protocols import load_protocol
from bayesmicro.data.protocols.helpsteer2 import ATTRIBUTES
from bayesmicro.errors import BadInput
from typer.testing import CliRunner

from bayesmicro.cli.app import app
from tests.cli.helpers import assert_bad_input, run_cli
from tests.embed.tiny import build_tiny_chat_model

WORDS = "the cat sat on a mat while rain fell and dogs ran far away from home to sea".split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _write_jsonl_gz(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)


def _helpsteer2_rows(n_prompts: int, seed: int) -> list[dict]:
    """3 rated responses per prompt, ratings 0–4 drawn at random per attribute (the hub's columns)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n_prompts):
        prompt = f"q{seed}-{i} " + _sentence(rng, 4)
        for j in range(3):
            rows.append({"prompt": prompt, "response": f"r{j} " + _sentence(rng, 3 + j),
                         **{a: rng.randint(0, 4) for a in ATTRIBUTES}})
    return rows


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(build_tiny_chat_model(tmp_path_factory.mktemp("tiny_llama")))


@pytest.fixture(scope="module")
def hs2_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hs2")
    _write_jsonl_gz(folder / "train.jsonl.gz", _helpsteer2_rows(10, 0))
    _write_jsonl_gz(folder / "validation.jsonl.gz", _helpsteer2_rows(5, 1))
    return folder


@pytest.fixture(scope="module")
def rpr_folder(tmp_path_factory):
    """The hub repo's layout: data/{train,test}-00000-of-00001.parquet, 3 categories."""
    folder = tmp_path_factory.mktemp("rpr")
    (folder / "data").mkdir()
    rng = random.Random(2)
    cats = ["style", "depth", "safety"]

    def row(i: int) -> dict:
        cx, cy = cats[i % 3], cats[(i + 1) % 3]
        return {"prompt": f"p{i} " + _sentence(rng, 4), "response_a": "a " + _sentence(rng, 4),
                "response_b": "b " + _sentence(rng, 5), "criteria_x": f"prefer {cx} " + _sentence(rng, 2),
                "criteria_y": f"prefer {cy} " + _sentence(rng, 2), "category_x": cx, "category_y": cy}

    datasets.Dataset.from_list([row(i) for i in range(30)]).to_parquet(folder / "data/train-00000-of-00001.parquet")
    datasets.Dataset.from_list([row(i) for i in range(30, 42)]).to_parquet(
        folder / "data/test-00000-of-00001.parquet")
    return folder


@pytest.fixture(scope="module")
def hs2_run(hs2_folder, tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("hs2_run")
    out = helpsteer2.run(seeds=2, out_dir=root / "out", data=str(hs2_folder), backbone=tiny_model, device="cpu",
                         cache_dir=str(root / "cache"), k=2, budgets=(3, 6), restarts=1)
    return out, root


def test_both_suites_are_registered_with_the_paper_taus():
    assert SUITES["helpsteer2"] == "bayesmicro.bench.helpsteer2" and SUITES["rpr"] == "bayesmicro.bench.rpr"
    assert helpsteer2.SUITE.tau == 1e-3 and rpr.SUITE.tau == 1e-4
    assert paper_protocol.PAPER_BACKBONE == "Ray2333/GRM-Llama3.2-3B-rewardmodel-ft"


def test_helpsteer2_suite_table_is_per_attribute_with_the_average(hs2_run, hs2_folder):
    out, _ = hs2_run
    pairs = load_protocol("helpsteer2", hs2_folder)
    assert out["pairs"] == {"train": pairs["split"].count("train"), "test": pairs["split"].count("test")}
    assert out["groups"] == sorted(ATTRIBUTES) and out["headline_budget"] == 6
    assert out["embedding"]["computed"] > 0 and out["embedding"]["embedding"]["pooling"] == "last"
    for seed in out["per_seed"]:
        cells = [*seed["metrics"].values(), *(c[b] for c in seed["stage2"].values() for b in ("3", "6"))]
        assert len(cells) == 3 + 3 * 2
        for cell in cells:  # the paper's average is the unweighted mean over attributes
            assert cell["average"] == pytest.approx(np.mean([cell[a] for a in ATTRIBUTES]))
            assert all(0.0 <= cell[a] <= 1.0 for a in ATTRIBUTES)
    # summary = mean over seeds of the per-seed cells; the table's stage-2 rows are at the headline budget
    got = out["stage2"]["hedge"]["6"]["average"]
    assert got["n"] == 2 and got["mean"] == pytest.approx(np.mean([s["stage2"]["hedge"]["6"]["average"]
                                                                  for s in out["per_seed"]]))
    rows = {r["method"]: r for r in paper_protocol.table_rows(out)}
    assert list(rows) == ["single BT", "static mixture", "MiCRo stage 1", "MiCRo + Hedge (B=6)",
                          "MiCRo + HyRe (B=6)", "bayesmicro posterior (B=6)"]
    assert rows["MiCRo + Hedge (B=6)"]["average"] == got
    assert rows["single BT"]["paper (3B)"] == 0.7632 and rows["bayesmicro posterior (B=6)"]["paper (3B)"] is None


def test_helpsteer2_suite_files_name_the_paper_backbone_and_numbers(hs2_run):
    _, root = hs2_run
    md = (root / "out" / "results.md").read_text()
    header = md.split("|---")[0]
    columns = "| method | coherence | complexity | correctness | helpfulness | verbosity | average | paper (3B) |"
    assert columns in header
    assert "GRM-Llama3.2-3B" in md and "0.7830" in md and "τ = 0.001" in md and "Stage 2 budget curves" in md
    assert (root / "out" / "budget_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((root / "out" / "results.json").read_text())["suite"] == "helpsteer2"


def test_helpsteer2_rerun_reads_every_text_from_the_cache(hs2_run, hs2_folder, tiny_model):
    _, root = hs2_run
    _, stats = paper_protocol.embed_protocol(helpsteer2.SUITE, str(hs2_folder), backbone=tiny_model, device="cpu",
                                             cache_dir=str(root / "cache"))
    assert stats["computed"] == 0 and stats["cache_hits"] > 0


def test_rpr_suite_two_reversed_pairs_per_row_categories_as_attributes(rpr_folder, tiny_model, tmp_path):
    out = rpr.run(seeds=1, out_dir=tmp_path / "out", data=str(rpr_folder), backbone=tiny_model, device="cpu",
                  cache_dir=str(tmp_path / "cache"), k=2, budgets=(4,), restarts=1)
    assert out["pairs"] == {"train": 60, "test": 24} and out["groups"] == ["depth", "safety", "style"]
    assert out["hedge_tau"] == 1e-4 and out["paper"]["hedge"] == 0.8218
    md = (tmp_path / "out" / "results.md").read_text()
    assert "Table 3" in md and "| depth | safety | style | average |" in md and "0.6594" in md


def _reversing_attributes(n: int = 1600, dim: int = 6, seed: int = 0) -> EmbeddedPairs:
    """Two attributes whose true heads are opposite on the first feature; only the context (criterion features)
    tells them apart, the prompt does not — so stage 1 cannot route and stage 2 must."""
    gen = torch.Generator().manual_seed(seed)
    group = np.where(torch.rand(n, generator=gen).numpy() < 0.5, "a", "b")
    sign = torch.from_numpy(np.where(group == "a", 1.0, -1.0)).float()
    diff = torch.randn(n, dim, generator=gen)
    flip = torch.rand(n, generator=gen) > torch.sigmoid(4.0 * sign * diff[:, 0] + diff[:, 1])
    diff[flip] = -diff[flip]
    chosen = torch.randn(n, dim, generator=gen)
    context = torch.randn(n, 3, generator=gen) * 0.1
    context[:, 0] += sign
    split = np.where(np.arange(n) < n * 3 // 4, "train", "test")
    return EmbeddedPairs(chosen=chosen + diff, rejected=chosen, prompt=torch.randn(n, 3, generator=gen),
                         context=context, group=group, split=split, source="<reversing attributes>")


def test_stage2_recovers_attributes_that_a_single_reward_cannot_serve(tmp_path):
    out = helpsteer2.run(seeds=1, out_dir=tmp_path, embedded=_reversing_attributes(), k=2, budgets=(50,),
                         restarts=2)
    single = out["stage1"]["single_bt"]["average"]["mean"]
    stage1 = out["stage1"]["micro_stage1"]["average"]["mean"]
    posterior = out["stage2"]["posterior"]["50"]
    assert single < 0.7 and stage1 < 0.7  # opposite attributes average out without the context
    assert posterior["a"]["mean"] > 0.78 and posterior["b"]["mean"] > 0.78
    assert out["stage2"]["hyre"]["50"]["average"]["mean"] > 0.78
    assert out["stage2"]["hedge"]["50"]["average"]["mean"] > stage1 + 0.05  # Algorithm 1 reads the context too


def test_suite_without_contexts_is_bad_input(tmp_path):
    data = _reversing_attributes(n=200)
    data.context = None
    with pytest.raises(BadInput, match="need a 'context' for every pair"):
        helpsteer2.run(seeds=1, out_dir=tmp_path, embedded=data, k=2, budgets=(5,))


def test_one_split_file_is_bad_input_before_any_backbone_loads(tmp_path):
    path = tmp_path / "train_only.jsonl.gz"
    _write_jsonl_gz(path, _helpsteer2_rows(3, 0))
    # the default backbone is a hub id that cannot load offline: the split check must come first
    with pytest.raises(BadInput, match="need both a train and a test split"):
        helpsteer2.run(seeds=1, out_dir=tmp_path / "out", data=str(path), k=2, budgets=(5,))
    assert not (tmp_path / "out").exists()


def _invoke(*args, env: dict | None = None):
    """The CLI in-process (typer's runner): exit code and output."""
    return CliRunner().invoke(app, ["bench", *map(str, args)], env=env)


def test_cli_helpsteer2_on_a_local_folder(hs2_folder, tiny_model, tmp_path):
    result = _invoke("helpsteer2", "--data", hs2_folder, "--backbone", tiny_model, "--device", "cpu", "--k", "2",
                     "--budgets", "4", "--seeds", "1", "--json", "--out", tmp_path / "r",
                     env={"BAYESMICRO_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["suite"] == "helpsteer2" and payload["budgets"] == [4] and payload["k"] == 2
    assert payload["embedding"]["cache_dir"].startswith(str(tmp_path / "cache"))
    assert payload["out_dir"] == str(tmp_path / "r") and (tmp_path / "r" / "budget_curves.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--budgets", "10,x"], "--budgets must be comma-separated integers ≥ 1"),
    (["--budgets", "0"], "--budgets must be comma-separated integers ≥ 1"),
    (["--k", "1"], "--k must be ≥ 2"),
    (["--data", "/nonexistent/hs2"], "/nonexistent/hs2"),
    (["--device", "tpu"], "--device must be cpu or auto or cuda"),
    (["--pairs", "10"], "--pairs only applies to the scale suite, not rpr"),
], ids=["budget-not-int", "budget-zero", "k-one", "missing-data", "bad-device", "scale-option"])
def test_cli_protocol_suite_bad_input_exits_2(args, message, tmp_path):
    result = _invoke("rpr", *args, "--out", tmp_path / "r")
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


def test_cli_bad_budgets_through_the_real_command(tmp_path):
    """One case through the installed entry point: one stderr line, empty stdout, exit 2."""
    assert_bad_input(run_cli("bench", "helpsteer2", "--budgets", "5,-1", "--out", tmp_path / "r"),
                     "--budgets must be comma-separated integers ≥ 1")
