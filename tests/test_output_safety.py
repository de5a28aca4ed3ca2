"""No command ever changes or removes a file outside its own output folder.

Property (hypothesis, in process): for random trees of user files and a hostile output location (the tree itself, a
folder or file in it, a folder holding it, a new path), every writer either writes a new folder at that location —
only where nothing was, or an empty folder was — or refuses with ``BadInput``; every user file is byte-identical
afterwards and nothing else appears. CLI sweep (the real entry point, as a user runs it; in-process unless
``BAYESMICRO_TEST_CLI=subprocess``, see tests/cli/helpers.py): `fit`, `embed`, `export`, `bench`
and `score` with hostile ``--out`` values exit 2 before any work and leave the tree byte-identical.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayesmicro._io import MARKER, atomic_dir, check_output, write_json
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro.errors import BadInput
from bayesmicro.infer.api import fit
from tests.cli.helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = 60


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` (hidden ones too): (kind, bytes for files)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        out[rel] = ("dir", None) if path.is_dir() else ("file", path.read_bytes())
    return out


names = st.text(alphabet="abcxyz0.-_", min_size=1, max_size=6).filter(lambda s: s not in (".", ".."))
trees = st.recursive(st.binary(max_size=20), lambda inner: st.dictionaries(names, inner, max_size=3), max_leaves=6)


def build(folder: Path, tree) -> None:
    for name, value in tree.items():
        if isinstance(value, dict):
            (folder / name).mkdir()
            build(folder / name, value)
        else:
            (folder / name).write_bytes(value)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.dictionaries(names, trees, min_size=1, max_size=4), pick=st.integers(0, 10_000),
       overwrite=st.booleans(), kind=st.sampled_from(["run", "embedded_pairs", "export", "bench"]))
def test_writers_never_touch_user_files(tree, pick, overwrite, kind):
    with tempfile.TemporaryDirectory() as tmp:
        user = Path(tmp) / "user"
        user.mkdir()
        build(user, tree)
        entries = [user, *sorted(user.rglob("*")), user / "new", user / "new" / "deeper"]
        target = entries[pick % len(entries)]
        before = snapshot(user)
        was_empty_or_absent = not target.exists() or (target.is_dir() and not any(target.iterdir()))
        try:
            with atomic_dir(target, kind, overwrite=overwrite, inputs=(next(iter(entries[1:]), None),)) as out:
                write_json(out / "result.json", {"ok": True})
        except BadInput:
            assert snapshot(user) == before
            return
        assert was_empty_or_absent, f"wrote over {target} ({before.get(str(target.relative_to(user)))})"
        after = snapshot(user)
        new = {k: v for k, v in after.items() if k not in before}
        assert {k: v for k, v in after.items() if k in before} == {
            k: v for k, v in before.items() if k in after}  # every user entry is byte-identical
        assert set(before) <= set(after)  # and none is gone
        rel = target.relative_to(user)
        assert all(Path(k) == rel or rel in Path(k).parents or Path(k) in rel.parents for k in new), new
        assert (target / MARKER).is_file()


def test_overwrite_replaces_a_previous_output_atomically_and_with_the_umask(tmp_path):
    target = tmp_path / "run"
    with atomic_dir(target, "run") as out:
        write_json(out / "a.json", 1)
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(BadInput, match="pass --overwrite"):
        check_output(target, "run")
    with pytest.raises(BadInput, match="different bayesmicro output"):
        check_output(target, "export", overwrite=True)
    with atomic_dir(target, "run", overwrite=True) as out:
        write_json(out / "b.json", 2)
    assert sorted(p.name for p in target.iterdir()) == sorted([MARKER, "b.json"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "run"]  # no temp or .old folders left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((target / "b.json").stat().st_mode) == 0o666 & ~umask


def test_a_stale_sibling_that_bayesmicro_did_not_write_is_kept(tmp_path):
    """A user's file named like a leftover temp folder (``.run.1.x.tmp``, ``.run.old``) is never deleted."""
    (tmp_path / ".run.1.x.tmp").mkdir()
    (tmp_path / ".run.1.x.tmp" / "mine.txt").write_text("precious")
    (tmp_path / ".run.old").write_text("precious")
    with atomic_dir(tmp_path / "run", "run") as out:
        write_json(out / "a.json", 1)
    assert (tmp_path / ".run.1.x.tmp" / "mine.txt").read_text() == "precious"
    assert (tmp_path / ".run.old").read_text() == "precious"


# -- the CLI, as a user runs it ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A user's folder: data, notes, a subfolder of their own, a run fitted on the data."""
    root = tmp_path_factory.mktemp("workspace")
    data, _ = make_population(PopulationSpec(n_pairs=120, dim=5, prompt_dim=3, context_dim=2), seed=0)
    np.savez(root / "d.npz", chosen=data.chosen.numpy(), rejected=data.rejected.numpy(), prompt=data.prompt.numpy(),
             group=data.group, split=data.split)
    (root / "notes.txt").write_text("precious\n")
    (root / "scores.jsonl").write_text('{"mine": 1}\n')
    (root / "mydir").mkdir()
    (root / "mydir" / "notes.txt").write_text("precious too\n")
    (root / "p.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    fit(EmbeddedPairs.load(root / "d.npz"), k=2, restarts=1).save(root / "run")
    return root


COMMANDS = {
    "fit": lambda out: ("fit", "d.npz", "--k", "2", "--restarts", "1", "--out", out),
    "embed": lambda out: ("embed", "p.jsonl", "--out", out),
    "export": lambda out: ("export", "run", "--weights", "static", "--backbone", "org/model", "--out", out),
    "bench": lambda out: ("bench", "synthetic", "--seeds", "1", "--out", out),
    "score": lambda out: ("score", "run", "d.npz", "--out", out),
}
HOSTILE = {"dot": ".", "notes_file": "notes.txt", "user_folder": "mydir", "input": "d.npz", "run_folder": "run",
           "parent": "..", "scores_file": "scores.jsonl", "input_text": "p.jsonl"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_command_touches_files_outside_its_output(command, workspace):
    before = snapshot(workspace.parent)
    argvs = {name: COMMANDS[command](out) for name, out in HOSTILE.items()}

    def run(argv):  # `bayesmicro` in the user's folder (in-process: tests/cli/helpers.py says when it is a child)
        return run_cli(*argv, cwd=workspace)

    results = {name: run(argv) for name, argv in argvs.items()}
    for name, proc in results.items():
        assert proc.code == 2, (name, proc.code, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and "--out" in lines[0], (name, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert snapshot(workspace.parent) == before  # byte-identical, nothing added, nothing removed
