"""The study suites folded from benchmarks/ scripts: each writes results.json and results.md through ``write_suite``
(their measurements stubbed: the real runs take minutes to hours)."""

from __future__ import annotations

import json

import pytest

from bayesmicro.bench import SUITES
from bayesmicro.bench import hh_optima, hh_restarts, nuts_mass, routing_active, routing_synthetic, vi_posteriors

STUDIES = ("vi_posteriors", "nuts_mass", "routing_synthetic", "routing_active", "hh_optima", "hh_restarts",
           "gpu_agreement")


def test_every_study_is_a_registered_suite():
    for name in STUDIES:
        assert SUITES[name] == f"bayesmicro.bench.{name}"


def _read(out):
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_vi_posteriors_and_nuts_mass_tables(monkeypatch, tmp_path):
    row = {"seconds": 2.0, "accuracy": 0.9, "mean_shift": None, "coverage": 0.9, "interval_width": 0.1, "ece": 0.01,
           "nll": 0.3}
    monkeypatch.setattr(vi_posteriors, "run_one", lambda kind, seed: dict(row))
    results, md = _read_after(vi_posteriors.run(seeds=1, out_dir=tmp_path / "vi"), tmp_path / "vi")
    assert set(results["by_seed"]["0"]) == set(vi_posteriors.KINDS) and "| 0 | refined |" in md
    nuts = {"seconds": 2.0, "warmup": 1, "draws": 3, "mass": "x", "min_head_ess": 4.0, "divergences": 0,
            "min_prob_ess": 2.0, "median_prob_ess": 6.0, "coverage": 0.9, "interval_width": 0.1, "ece": 0.0, "nll": 0.3}
    monkeypatch.setattr(nuts_mass, "run_one", lambda mass, seed, draws: dict(nuts))
    results, md = _read_after(nuts_mass.run(seeds=1, out_dir=tmp_path / "nuts", draws=3), tmp_path / "nuts")
    assert results["by_seed"]["0"]["laplace_over_adapt_ess_per_second"]["min_head_ess"] == pytest.approx(1.0)


def test_routing_and_hh_studies_write_their_summaries(monkeypatch, tmp_path):
    monkeypatch.setitem(routing_synthetic.PARTS, "routing", lambda seed: {"accuracy": 0.5 + seed})
    results, md = _read_after(routing_synthetic.run(seeds=1, out_dir=tmp_path / "rs", parts=("routing",)),
                              tmp_path / "rs")
    assert results["by_seed"]["0"]["routing"] == {"accuracy": 0.5}
    monkeypatch.setattr(routing_active, "run_seed", lambda *a: [])
    monkeypatch.setattr(routing_active, "summarise", lambda curves, strategies: {"stub": True})
    monkeypatch.setattr(routing_active, "markdown", lambda results: "# title\n\nbody")
    results, md = _read_after(routing_active.run(seeds=1, out_dir=tmp_path / "ra", users=1), tmp_path / "ra")
    assert results["populations"]["sharp"]["stub"] and "body" in md
    for module in (hh_optima, hh_restarts):
        monkeypatch.setattr(module, "run_seeds", lambda run_seed, seeds, restarts: {str(s): {} for s in seeds})
        monkeypatch.setattr(module, "summarise", lambda *a: {"n": 1})
        out = tmp_path / module.__name__.rsplit(".", 1)[1]
        results, md = _read_after(module.run(seeds=2, out_dir=out, restarts=1), out)
        assert results["summary"] == {"n": 1} and set(results["by_seed"]) == {"0", "1"}


def _read_after(returned, out):
    results, md = _read(out)
    assert returned["suite"] == results["suite"]
    return results, md
