"""The README's examples run as written (in a scratch folder: they save runs)."""

from __future__ import annotations

import os
import re
import shlex

from tests.cli.helpers import ROOT, run_cli


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


def _bash_commands() -> list[str]:
    """Every `bayesmicro …` line of the README's bash blocks, comments stripped."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("bayesmicro ")]


def test_readme_feature_commands_run_as_written(tmp_path):
    # the "fit your own features" and "personalize" blocks, on a features.npz written here
    from bayesmicro.data.synthetic import PopulationSpec, make_population

    data, _ = make_population(PopulationSpec(n_pairs=600, dim=6, prompt_dim=4, context_dim=3, k=2), seed=0)
    data.save(tmp_path / "features.npz")
    runnable = [c for c in _bash_commands() if "features.npz" in c]
    assert len(runnable) == 3, runnable
    for command in runnable:
        result = run_cli(*shlex.split(command)[1:], cwd=tmp_path)
        assert result.code == 0, (command, result.stderr)
        assert {"command", "version", "seconds", "warnings"} <= set(result.json())


def test_readme_other_commands_name_real_options():
    # embed and bench blocks need the shared data and minutes: their commands must parse (every option exists)
    for command in _bash_commands():
        if "features.npz" in command:
            continue
        words = shlex.split(command)[1:]
        result = run_cli(*words[:1], "--help")
        assert result.code == 0, command
        for option in (w for w in words if w.startswith("--")):
            assert option in result.stdout, (command, option)
