"""The README's Python example runs as written (in a scratch folder: it saves a run)."""

from __future__ import annotations

import os
import re

from tests.cli.helpers import ROOT


def test_readme_python_example_runs(tmp_path, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) == 1
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(blocks[0], "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and "'k'" in printed[0] and "accuracy" in printed[1]
    assert (tmp_path / "runs" / "demo" / "config.json").exists()
