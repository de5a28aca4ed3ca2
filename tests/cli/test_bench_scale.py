"""`bench scale` (hooked into `bayesmicro bench` by the lead): the JSON report and its arithmetic, bad input."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from bayesmicro.cli.bench_scale import bench_scale_command


@pytest.fixture
def app():
    app = typer.Typer()
    app.command("scale")(bench_scale_command)
    app.command("other")(lambda: None)  # two commands: typer keeps the "scale" name
    return app


def test_bench_scale_json_reports_floor_ratio_and_rss(app, tmp_path):
    result = CliRunner().invoke(app, ["scale", "--pairs", "3000", "--dim", "32", "--k", "3", "--batch-size", "500",
                                      "--threads", "1", "--cache", str(tmp_path / "b"), "--out", str(tmp_path / "r"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["pairs"] == 3000 and report["dim"] == 32 and report["k"] == 3 and report["threads"] == 1
    assert report["pairs_per_second"] == pytest.approx(3000 / report["epoch_seconds"])
    assert report["ratio_to_floor"] == pytest.approx(report["epoch_seconds"] / report["read_pass_seconds"])
    assert 10e6 < report["peak_rss_bytes"] < 6e9
    # the kept cache: 3000 pairs × (32 + 32 + 32) fp16 values, plus the safetensors headers
    assert 3000 * 96 * 2 <= report["cache_bytes"] < 3000 * 96 * 2 + 4096
    assert (tmp_path / "b" / "cache" / "manifest.json").is_file()
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    assert saved["pairs_per_second"] == report["pairs_per_second"]
    assert "preference700k" not in report  # CPU runs only the requested shape


@pytest.mark.parametrize("args, message", [(["--pairs", "0"], "--pairs must be ≥ 1"),
                                           (["--device", "tpu"], "--device must be cpu or cuda"),
                                           (["--router-dtype", "int8"], "--router-dtype must be float32 or")],
                         ids=["zero-pairs", "bad-device", "bad-router-dtype"])
def test_bench_scale_bad_input_exits_2(app, args, message):
    result = CliRunner().invoke(app, ["scale", *args])
    assert result.exit_code == 2 and message in result.output
