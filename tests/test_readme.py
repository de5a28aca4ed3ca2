"""The README's examples run as written (in a scratch folder: they save runs), and its size stays a user guide's.

Every command line of the README's bash blocks is run by one test below, as written (``_covered`` checks that none
is left out): the Python example, the feature-file blocks, the text-to-features block (real data, ~1 min), the
benchmark block (``slow``: minutes; ``make test-all`` runs it) and ``make demo``'s ``bayesmicro fit``. ``make test``
is not run from a test: it is the suite itself, which the CI runs (``.ci/run``)."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest

from tests.cli.helpers import ROOT, run_cli

README = (ROOT / "README.md").read_text()
SHARED = ROOT.parent / "shared"  # the README's ../shared/data/… paths are relative to the checkout


def test_readme_is_a_short_guide():
    assert len(README.splitlines()) <= 250


def test_readme_python_example_runs(tmp_path, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
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


def _bash_blocks() -> list[list[str]]:
    """The command lines of each of the README's bash blocks, comments stripped."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [[line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
            for block in blocks]


def _block(first: str) -> list[str]:
    """The bash block whose first line starts with ``first``."""
    found = [block for block in _bash_blocks() if block[0].startswith(first)]
    assert len(found) == 1, (first, _bash_blocks())
    return found[0]


FEATURES = [c for block in _bash_blocks() for c in block if "features.npz" in c]
EMBED = _block("bayesmicro embed ")
BENCH = _block("bayesmicro bench ")
MAKE = _block("make ")


def test_every_readme_command_is_run_by_a_test():
    covered = FEATURES + EMBED + BENCH + MAKE
    every = [c for block in _bash_blocks() for c in block]
    assert sorted(covered) == sorted(every), set(every) - set(covered)
    assert [shlex.split(c)[:2] for c in MAKE] == [["make", "demo"], ["make", "test"]], MAKE


def test_readme_feature_commands_run_as_written(tmp_path):
    # the "fit your own features" and "personalize" blocks, on a features.npz written here
    from bayesmicro.data.synthetic import PopulationSpec, make_population

    data, _ = make_population(PopulationSpec(n_pairs=600, dim=6, prompt_dim=4, context_dim=3, k=2), seed=0)
    data.save(tmp_path / "features.npz")
    assert len(FEATURES) == 3, FEATURES
    for command in FEATURES:
        result = run_cli(*shlex.split(command)[1:], cwd=tmp_path)
        assert result.code == 0, (command, result.stderr)
        assert {"command", "version", "seconds", "warnings"} <= set(result.json())


def test_make_demo_runs_its_command(tmp_path):
    # `make demo` = install, then the Makefile's demo recipe: `bayesmicro fit` with no data (the built-in comparison)
    recipe = re.search(r"^demo:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), flags=re.M).group(1).strip()
    assert recipe == "$(BIN)/bayesmicro fit", recipe
    result = run_cli(*shlex.split(recipe)[1:], cwd=tmp_path)
    assert result.code == 0, result.stderr
    table = {line.split()[1]: float(line.split()[3]) for line in result.stderr.splitlines()
             if line.startswith("│") and len(line.split()) > 3 and line.split()[1] != "model"}
    assert set(table) == {"single_bt", "static_mixture", "routed_mixture", "oracle"}, result.stderr
    assert table["routed_mixture"] >= table["oracle"] - 0.02 and table["single_bt"] <= table["oracle"] - 0.10
    assert list(tmp_path.iterdir()) == []  # without --out nothing is saved


def _user_folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """(working folder, environment) as a user's: tmp/repo with tmp/shared → the real shared folder, so that the
    README's ../shared/data/… paths resolve; HOME, the XDG cache and the embedding cache inside tmp, so that a run
    never writes to (or reads a warm cache from) the real home."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"the shared data folder {SHARED / 'data'} (../shared/data from the checkout) is absent")
    repo, home = tmp_path / "repo", tmp_path / "home"
    repo.mkdir()
    home.mkdir()
    (tmp_path / "shared").symlink_to(SHARED.resolve(), target_is_directory=True)
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
           "BAYESMICRO_CACHE": str(home / ".cache" / "bayesmicro" / "embeddings")}
    return repo, env


def _run(command: str, cwd: Path, env: dict[str, str], timeout: float) -> dict:
    """``command`` in a child `bayesmicro` process (the environment is read at import time); its JSON, if any."""
    result = run_cli(*shlex.split(command)[1:], cwd=cwd, env=env, timeout=timeout)
    assert result.code == 0, (command, result.stderr[-3000:])
    return result.json() if "--json" in command else {}


def test_readme_text_to_features_block_runs_as_written(tmp_path):
    # real text: embed judgments with the default offline MiniLM backbone, then fit on the features written
    repo, env = _user_folder(tmp_path)
    assert [shlex.split(c)[:2] for c in EMBED] == [["bayesmicro", "embed"], ["bayesmicro", "fit"]], EMBED
    embedded = _run(EMBED[0], repo, env, timeout=600)
    limit = int(shlex.split(EMBED[0])[shlex.split(EMBED[0]).index("--limit") + 1])
    assert embedded["pairs"] == limit and embedded["dim"] == 384 and embedded["cache_hits"] == 0
    assert embedded["texts"] == 549  # as the README says: each distinct text embedded once
    assert Path(embedded["cache_dir"]).is_relative_to(tmp_path)
    assert (repo / embedded["out"]).is_dir()
    fitted = _run(EMBED[1], repo, env, timeout=600)
    assert fitted["evaluated_on"] == "test" and fitted["optimisation"]["converged"]
    assert fitted["routed_mixture"]["accuracy"] > 0.7 and fitted["single_bt"]["accuracy"] > 0.7
    assert fitted["routed_mixture"]["nll"] < fitted["single_bt"]["nll"]  # what the README says the block shows
    assert {"config.json", "split.json"} <= {p.name for p in (repo / fitted["out"]).iterdir()}


@pytest.mark.slow
@pytest.mark.parametrize("command", BENCH, ids=[shlex.split(c)[2] for c in BENCH])
def test_readme_bench_commands_run_as_written(tmp_path, command):
    # minutes each (ukp ~14, synthetic ~2 on one thread): `make test-all` / `pytest -m slow`
    repo, env = _user_folder(tmp_path)
    suite = shlex.split(command)[2]
    printed = _run(command, repo, env, timeout=3600)
    out = tmp_path / "home" / ".cache" / "bayesmicro" / "bench" / suite  # no --out: the per-user cache folder
    results = json.loads((out / "results.json").read_text())
    assert results["suite"] == suite and (out / "results.md").exists()
    assert all((out / name).exists() for name in results["files"])
    if printed:
        assert printed["suite"] == suite and Path(printed["out"]) == out
    assert list(repo.iterdir()) == []  # never the current folder
