"""The installed package, as a user meets it outside this checkout: `import bayesmicro` and the console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _outside_the_checkout(tmp_path: Path, *command: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what is installed
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_import_gives_the_regular_package_with_its_api(tmp_path):
    code = "import bayesmicro as bm; print(bm.__file__); print(bm.fit, bm.load, bm.EmbeddedPairs, bm.Fit)"
    result = _outside_the_checkout(tmp_path, sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].endswith(os.path.join("bayesmicro", "__init__.py")), result.stdout


def test_the_console_script_runs(tmp_path):
    script = shutil.which("bayesmicro", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.fail(f"no `bayesmicro` script beside {sys.executable}: install the project (pip install -e .)")
    result = _outside_the_checkout(tmp_path, script, "--help")
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in ("fit", "embed", "route", "eval", "score", "bench", "diagnose"))


def test_starting_the_cli_leaves_the_heavy_optional_libraries_unimported(tmp_path):
    """Every `bayesmicro` process imports the CLI; `datasets` (with pandas, pyarrow), `transformers`, `scipy` and
    `matplotlib` are imported by the commands that use them, not at start-up."""
    heavy = ("datasets", "pandas", "pyarrow", "transformers", "scipy", "matplotlib")
    code = f"import sys, bayesmicro.cli.app; print([m for m in {heavy!r} if m in sys.modules])"
    result = _outside_the_checkout(tmp_path, sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
