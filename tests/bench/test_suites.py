import json
import math

import pytest
from typer.testing import CliRunner

import bayesmicro.bench as bench
from bayesmicro.bench import irreducible, speed, synthetic
from bayesmicro.cli.app import app
from bayesmicro.data.synthetic import PopulationSpec
from bayesmicro.infer.api import fit


def test_irreducible_single_bt_stays_above_the_bound_and_mixture_reaches_entropy(tmp_path):
    pops = (irreducible.StudyPopulation(k=2, spread=0.0, dim=3), irreducible.StudyPopulation(k=2, spread=1.5, dim=3),
            irreducible.StudyPopulation(k=3, spread=1.5, dim=3, proportions=(0.5, 0.3, 0.2)))
    out = irreducible.run(seeds=1, out_dir=tmp_path, populations=pops, sizes=(400, 8000), n_eval=20_000,
                          restarts=1)
    assert out["single_bt_above_bound_everywhere"]
    assert out["mixture_within_tolerance_of_entropy_at_largest_n"]
    spread0, spread = out["studies"][0]["theorem"], out["studies"][1]["theorem"]
    assert spread0["gap"] == pytest.approx(0.0, abs=1e-12) and spread["gap"] > 0.01
    assert out["studies"][2]["theorem"]["rho"] == pytest.approx(0.2)
    # with spread, the single BT is worse than the mixture by about the gap
    last = out["studies"][1]["by_n"][-1]
    assert last["single_bt_ce"] - last["mixture_ce"] > spread["gap"] - irreducible.MIXTURE_TOLERANCE
    for name in ("results.json", "results.md", "theorem_3_2.png"):
        assert (tmp_path / name).exists()
    assert json.loads((tmp_path / "results.json").read_text())["suite"] == "irreducible"


def test_synthetic_suite_writes_every_method_and_the_routed_mixture_wins(tmp_path):
    out = synthetic.run(seeds=2, out_dir=tmp_path, spec=PopulationSpec(n_pairs=1200, dim=8), restarts=1,
                        budgets=(10, 100))
    assert set(out["summary"]) == set(synthetic.METHODS)
    nll = {m: out["summary"][m]["nll"]["mean"] for m in synthetic.METHODS}
    assert nll["oracle"] < nll["bayesmicro_context"] < nll["single_bt"]
    assert out["recovery"]["bayesmicro_context"]["head_cosine"]["mean"] > 0.9
    assert out["recovery"]["bayesmicro_context"]["router_corr"]["mean"] > 0.8
    assert {v["k_fit"] for v in out["misspecified"].values()} == {2, 3, 5}
    assert out["misspecified"]["k=2"]["matched_heads"] == 2
    assert out["summary"]["oracle"]["accuracy"]["n"] == 2
    md = (tmp_path / "results.md").read_text()
    assert "± " in md and "micro_stage1_hyre" in md
    # MiCRo as published (stage 1 + Hedge) and the posterior are the B = 50 points of their budget curves
    assert set(out["stage2"]) == set(synthetic.ROUTING) and out["budgets"] == [10, 50, 100]
    for seed in out["per_seed"]:
        for name, method in (("micro_hedge", "hedge"), ("micro_posterior", "posterior")):
            assert seed["metrics"][name]["accuracy"] == seed["stage2"][method]["50"]["accuracy"]
    curve = {m: [out["stage2"][m][str(b)]["accuracy"]["mean"] for b in out["budgets"]] for m in synthetic.ROUTING}
    # context routing from labels beats the context-blind stage-1 router once 100 pairs per group are labelled
    assert curve["posterior"][-1] > out["summary"]["micro_stage1"]["accuracy"]["mean"] + 0.05
    assert "Stage 2 budget curves" in md and "| hedge |" in md
    for name in ("budget_curves", "head_specialisation", "router_weights", "reliability"):
        assert (tmp_path / f"{name}.png").exists()


def test_speed_suite_reports_both_times_and_their_ratio(tmp_path):
    spec = speed.SpeedSpec(n_pairs=600, dim=48, k=3, latent_dim=8)
    optimum = speed.OptimumSpec(n_pairs=500, dim=16, k=2, latent_dim=4, long_iterations=400)
    out = speed.run(seeds=1, out_dir=tmp_path, spec=spec, device="cpu", embed_texts=6, optimum=optimum)
    row = out["per_seed"][0]
    assert row["paper"]["seconds"] > 0 and row["bayesmicro"]["seconds"] > 0
    assert out["time_ratio"]["mean"] == pytest.approx(row["bayesmicro"]["seconds"] / row["paper"]["seconds"])
    assert row["oracle_nll"] < row["paper"]["nll"] < 0.75
    assert "Time ratio" in (tmp_path / "results.md").read_text()
    reached = out["time_to_optimum"]
    best = reached["best_objective"]
    assert best <= min(reached["reference"]["final_objective"], reached["bayesmicro"]["objective"])
    for name in ("reference", "bayesmicro"):  # a time is given exactly when the run came within 0.002 of the best
        assert (reached[name]["seconds"] is not None) == (reached[name]["objective"] <= best + 0.002)
    assert "Time to the optimum" in (tmp_path / "results.md").read_text()
    # the embedding-throughput table: the three paths saw the same texts and gave the same features
    through = out["embed_throughput"]
    assert through["size"] == "small" and through["dtype"] == "float32" and through["texts"] == 6
    assert through["naive"]["tokens"] == through["reference"]["tokens"] == through["library"]["tokens"] > 6
    assert through["batching"] == "packed" and through["max_batch_tokens"] == 1024
    assert through["matmul_peak_tflops"] > 0
    for key in ("naive", "reference", "library"):
        r = through[key]
        assert r["tokens_per_second"] == pytest.approx(r["tokens"] / r["seconds"])
        assert r["tflops"] == pytest.approx(2 * through["non_embedding_params"] * r["tokens_per_second"] / 1e12)
        assert r["share_of_peak"] == pytest.approx(r["tflops"] / through["matmul_peak_tflops"])
    assert through["speedup"] == pytest.approx(through["library"]["tokens_per_second"]
                                               / through["naive"]["tokens_per_second"])
    assert through["library_vs_reference"] == pytest.approx(through["library"]["tokens_per_second"]
                                                            / through["reference"]["tokens_per_second"])
    assert through["max_abs_diff_relative"] < 1e-2  # fp16 cache rounding only
    assert through["reference_max_abs_diff_relative"] < 1e-4  # fp32, padded vs unpadded
    md = (tmp_path / "results.md").read_text()
    assert "Embedding throughput" in md and "| reference |" in md and "% of peak" in md


def test_cli_bench_json_keys(tmp_path, monkeypatch):
    monkeypatch.setitem(bench.SUITES, "tiny", "tests.bench.tiny_suite")
    result = CliRunner().invoke(app, ["bench", "tiny", "--seeds", "1", "--json", "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"suite", "machine", "seeds", "files", "out_dir", "studies"} <= set(payload)
    assert payload["out_dir"] == str(tmp_path / "t") and payload["seeds"] == [0]
    assert (tmp_path / "t" / "results.md").exists()


def test_cli_bench_unknown_suite_is_bad_input():
    result = CliRunner().invoke(app, ["bench", "nope"])
    assert result.exit_code == 2
    assert "unknown benchmark suite 'nope'" in result.output and "synthetic" in result.output


def test_head_and_router_recovery_see_through_label_switching():
    import torch

    truth = torch.eye(3, 5) * 2.0
    fitted = truth[[2, 0, 1]] * 3.0  # same directions, permuted and rescaled
    rec = synthetic.head_recovery(fitted, truth)
    assert rec["perm"] == [1, 2, 0] and rec["mean_cosine"] == pytest.approx(1.0) and rec["matched"] == 3
    true_log_w = torch.log_softmax(torch.randn(50, 3, generator=torch.Generator().manual_seed(0)), -1)
    assert synthetic.router_recovery(true_log_w[:, [2, 0, 1]], true_log_w, rec["perm"]) == pytest.approx(1.0)
    fewer = synthetic.head_recovery(truth[[1, 2]], truth)  # K_fit < K_true: one true head stays unmatched
    assert fewer["matched"] == 2 and fewer["perm"].count(-1) == 1 and fewer["mean_cosine"] == pytest.approx(1.0)


def test_cli_bench_rejects_zero_seeds():
    result = CliRunner().invoke(app, ["bench", "speed", "--seeds", "0"])
    assert result.exit_code == 2 and "--seeds must be ≥ 1" in result.output


def test_the_time_to_optimum_objective_is_bayesmicros_map_objective():
    spec = speed.SpeedSpec(n_pairs=400, dim=12, k=2, latent_dim=4)
    data, _ = speed.make_features(spec, seed=0)
    fitted = fit(data, k=2, router="prompt", restarts=1)
    objective = speed.MapObjective(data.part("train"))
    n, k, d = len(data.part("train")), 2, 12
    # Pyro's objective keeps the head prior's normalising constant, K·d·log √(2π) for σ = 1
    expected = fitted.summary["objective"] - k * d * 0.5 * math.log(2 * math.pi) / n
    assert objective.of_fit(fitted) == pytest.approx(expected, abs=1e-5)
