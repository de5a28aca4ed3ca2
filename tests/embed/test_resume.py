"""SIGKILL in the middle of `bayesmicro embed`, rerun: the output and the cache are byte-identical to an
uninterrupted run."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from bayesmicro.cli.app import app
from tests.common import child_env

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import sys, time
from bayesmicro.embed import extract
from bayesmicro.embed.extract import Extractor
extract.BLOCK_TEXTS = extract.MIN_BLOCK_TEXTS = 1  # one text per block: one cache shard each
real = Extractor.run
def slow(self, batch, buffer):  # slow each batch down so the kill lands mid-run
    time.sleep(0.15)
    return real(self, batch, buffer)
Extractor.run = slow
from bayesmicro.cli.app import app
app(sys.argv[1:])
"""


def _write_data(path: Path) -> None:
    rows = [{"prompt": f"Human: question {i} " + "more " * i, "chosen": f"good answer {i}",
             "rejected": f"bad answer {i} " + "x " * (i % 3), "subset": "a" if i % 2 else "b"} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def _args(data, model, out, cache):
    return ["embed", str(data), "--protocol", "hh_rlhf", "--model", model, "--batch-size", "1", "--out", str(out),
            "--cache-dir", str(cache), "--json"]


def test_sigkill_midway_then_rerun_is_byte_identical(tiny_model, tmp_path, monkeypatch):
    from bayesmicro.embed import extract

    monkeypatch.setattr(extract, "BLOCK_TEXTS", 1)
    monkeypatch.setattr(extract, "MIN_BLOCK_TEXTS", 1)
    data = tmp_path / "pairs.jsonl"
    _write_data(data)
    runner = CliRunner()
    done = runner.invoke(app, _args(data, tiny_model, tmp_path / "ref", tmp_path / "ref_cache"))
    assert done.exit_code == 0, done.output
    n_shards = len(list((tmp_path / "ref_cache").rglob("shard-*.safetensors")))
    assert n_shards == 36  # 24 responses + 12 prompts, one per block

    env = child_env()
    child = subprocess.Popen([sys.executable, "-c", CHILD, *_args(data, tiny_model, tmp_path / "out",
                                                                  tmp_path / "cache")],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    listed = 0
    while time.time() < deadline and child.poll() is None:
        manifests = list((tmp_path / "cache").glob("*/manifest.json"))
        try:
            listed = len(json.loads(manifests[0].read_text())["shards"]) if manifests else 0
        except (json.JSONDecodeError, OSError):  # pragma: no cover - renames are atomic
            listed = 0
        if listed >= 10:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 10 <= listed < n_shards
    assert not (tmp_path / "out").exists()  # nothing half-written

    resumed = runner.invoke(app, _args(data, tiny_model, tmp_path / "out", tmp_path / "cache"))
    assert resumed.exit_code == 0, resumed.output
    report = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert report["cache_hits"] >= 10 and report["computed"] == 36 - report["cache_hits"]
    assert _tree(tmp_path / "out") == _tree(tmp_path / "ref")
    assert _tree(tmp_path / "cache") == _tree(tmp_path / "ref_cache")
