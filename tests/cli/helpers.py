"""Run the real `bayesmicro` CLI in a subprocess, as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from tests.common import child_env

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one JSON line on stdout, got {self.stdout!r}"
        return json.loads(lines[0])


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> Result:
    full_env = child_env(**(env or {}))
    proc = subprocess.run([sys.executable, "-m", "bayesmicro.cli.app", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=ROOT)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_bad_input(result: Result, *fragments: str) -> None:
    """Exit code 2, one line on stderr naming what is wrong, no traceback, nothing on stdout."""
    assert result.code == 2, (result.code, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == ""
