"""Untrusted files: loading a run folder or embedded pairs never unpickles or evaluates code.

Each test plants a payload whose unpickling would create a marker file, then loads; the load is refused (or the
payload ignored) and the marker never appears. A static scan of the package (AST, not grep, so aliases and keyword
arguments are seen) forbids the calls that could unpickle.
"""

from __future__ import annotations

import ast
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import bayesmicro as bm
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput
from bayesmicro.infer.results.mixture import Fit
from tests.cli.helpers import ROOT, assert_bad_input, run_cli
from tests.common import small_pairs


class Payload:
    """Unpickling this object opens ``marker`` for writing, i.e. creates the file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _payload_bytes(marker: Path) -> bytes:
    return pickle.dumps({"heads": Payload(marker)})


def test_the_payload_really_fires_when_unpickled(tmp_path):
    """Guards the other tests: if this payload did not create the marker, their 'marker absent' would prove nothing."""
    marker = tmp_path / "marker"
    pickle.loads(_payload_bytes(marker))
    assert marker.exists()


@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("untrusted")
    data = small_pairs(n=60, d=4, d_p=3, d_c=None, seed=1)
    bm.fit(data, k=2, restarts=1).save(root / "run")
    data.save(root / "pairs")
    return root / "run", root / "pairs"


def _copy_run(run_and_data, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(run_and_data[0], run)
    return run


def _torch_pickle(path: Path, marker: Path) -> None:
    torch.save({"heads": Payload(marker)}, path)  # a zip with data.pkl inside: loading it unsafely runs the payload


@pytest.mark.parametrize("plant", ["raw_pickle", "torch_save_zip"])
def test_params_that_are_a_pickle_are_refused(run_and_data, tmp_path, plant):
    run, marker = _copy_run(run_and_data, tmp_path), tmp_path / "marker"
    if plant == "raw_pickle":
        (run / "params.safetensors").write_bytes(_payload_bytes(marker))
    else:
        _torch_pickle(run / "params.safetensors", marker)
    with pytest.raises(BadInput, match="params.safetensors: not a valid safetensors file"):
        Fit.load(run)
    assert not marker.exists()


def test_cli_eval_refuses_a_pickled_run(run_and_data, tmp_path):
    run, marker = _copy_run(run_and_data, tmp_path), tmp_path / "marker"
    (run / "params.safetensors").write_bytes(_payload_bytes(marker))
    assert_bad_input(run_cli("eval", run, run_and_data[1], "--split", "all"), "params.safetensors")
    assert not marker.exists()


def test_a_pt_file_beside_a_run_is_never_read(run_and_data, tmp_path):
    run, marker = _copy_run(run_and_data, tmp_path), tmp_path / "marker"
    _torch_pickle(run / "params.pt", marker)
    (run / "params.pkl").write_bytes(_payload_bytes(marker))
    loaded = Fit.load(run)
    assert torch.equal(loaded.heads, Fit.load(run_and_data[0]).heads)
    (run / "params.safetensors").unlink()  # with only the .pt left, loading fails instead of falling back to it
    with pytest.raises(BadInput, match="params.safetensors: missing file"):
        Fit.load(run)
    assert not marker.exists()


def test_npz_with_a_pickled_object_array_is_refused(tmp_path):
    marker, path = tmp_path / "marker", tmp_path / "pairs.npz"
    data = small_pairs(n=5, d=3, d_p=2, d_c=None)
    group = np.array([Payload(marker)] * 5, dtype=object)
    np.savez(path, chosen=data.chosen.numpy(), rejected=data.rejected.numpy(), prompt=data.prompt.numpy(),
             group=group)  # np.savez pickles object arrays
    with zipfile.ZipFile(path) as archive:
        assert b"marker" in archive.read("group.npy")  # the payload is really in the file
    with pytest.raises(BadInput, match="needs pickle"):
        EmbeddedPairs.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".npz", ".npy", ".pt"])
def test_a_pickle_named_like_features_is_refused(tmp_path, suffix):
    marker, path = tmp_path / "marker", tmp_path / f"pairs{suffix}"
    path.write_bytes(_payload_bytes(marker))
    with pytest.raises(BadInput, match="not an .npz archive" if suffix == ".npz" else "expected an embedded-pairs"):
        EmbeddedPairs.load(path)
    assert not marker.exists()


def test_embedded_folder_with_pickled_features_is_refused(run_and_data, tmp_path):
    folder, marker = tmp_path / "pairs", tmp_path / "marker"
    shutil.copytree(run_and_data[1], folder)
    _torch_pickle(folder / "features.safetensors", marker)
    with pytest.raises(BadInput, match="features.safetensors: not a valid safetensors file"):
        EmbeddedPairs.load(folder)
    assert not marker.exists()


# -- static scan ------------------------------------------------------------------------------------------------------
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


def unsafe_calls(source: str) -> list[str]:
    """Lines of ``source`` that could unpickle or evaluate code: any import of a pickle-like module, ``torch.load``
    without ``weights_only=True``, ``np.load``/``numpy.load`` with ``allow_pickle`` not literally False, builtin
    ``eval``/``exec``, ``yaml.load``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if module in UNSAFE_MODULES or (module == "torch" and any(a.name == "load" for a in node.names)):
                found.append(f"{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            name = ast.unparse(func)
            keywords = {k.arg: k.value for k in node.keywords}

            def literal(key):
                return isinstance(keywords.get(key), ast.Constant) and keywords[key].value

            if name == "torch.load" and literal("weights_only") is not True:
                found.append(f"{node.lineno}: torch.load without weights_only=True")
            elif name in ("np.load", "numpy.load") and "allow_pickle" in keywords \
                    and literal("allow_pickle") is not False:
                found.append(f"{node.lineno}: {name}(allow_pickle=...)")
            elif name in ("eval", "exec", "yaml.load", "yaml.unsafe_load"):
                found.append(f"{node.lineno}: {name}(...)")
    return found


def test_the_scanner_catches_what_it_forbids():
    bad = ("import pickle\nfrom joblib import load\nimport torch\ntorch.load(f)\ntorch.load(f, weights_only=False)\n"
           "import numpy as np\nnp.load(f, allow_pickle=True)\neval('1')\n")
    assert len(unsafe_calls(bad)) == 6
    good = "import torch\nimport numpy as np\ntorch.load(f, weights_only=True)\nnp.load(f, allow_pickle=False)\n"
    assert unsafe_calls(good) == []


def test_the_package_never_unpickles():
    files = sorted((ROOT / "bayesmicro").rglob("*.py"))
    assert len(files) > 10
    offences = {str(f.relative_to(ROOT)): hits for f in files if (hits := unsafe_calls(f.read_text()))}
    assert offences == {}
