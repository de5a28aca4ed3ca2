"""`bayesmicro bench scale`: the JSON report and its arithmetic, bad input."""

from __future__ import annotations

import json

import pytest

from tests.cli.helpers import assert_bad_input, run_cli


def test_bench_scale_json_reports_floor_ratio_and_rss(tmp_path):
    result = run_cli("bench", "scale", "--pairs", "3000", "--dim", "32", "--k", "3", "--out", tmp_path / "r", "--json",
                     subprocess=True)  # a process of its own: its peak RSS is the command's
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["pairs"] == 3000 and report["dim"] == 32 and report["k"] == 3
    assert report["pairs_per_second"] == pytest.approx(3000 / report["epoch_seconds"])
    assert report["ratio_to_floor"] == pytest.approx(report["epoch_seconds"] / report["read_pass_seconds"])
    assert 10e6 < report["peak_rss_bytes"] < 6e9
    # the cache: 3000 pairs × (32 + 32 + 32) fp16 values, plus the safetensors headers
    assert 3000 * 96 * 2 <= report["cache_bytes"] < 3000 * 96 * 2 + 4096
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    assert saved["pairs_per_second"] == report["pairs_per_second"]
    assert "preference700k" not in report  # CPU runs only the requested shape


@pytest.mark.parametrize("args, message", [(["--pairs", "0"], "--pairs must be ≥ 1"),
                                           (["--device", "tpu"], "--device must be cpu or cuda")],
                         ids=["zero-pairs", "bad-device"])
def test_bench_scale_bad_input_exits_2(tmp_path, args, message):
    assert_bad_input(run_cli("bench", "scale", *args, "--out", tmp_path / "r"), message)
    assert not (tmp_path / "r").exists()


def test_scale_options_are_refused_for_other_suites():
    assert_bad_input(run_cli("bench", "synthetic", "--pairs", "10"), "--pairs only applies to the scale suite, not "
                     "synthetic")
    assert_bad_input(run_cli("bench", "irreducible", "--k", "3"), "--k only applies to the scale, helpsteer2, rpr "
                     "suites")
