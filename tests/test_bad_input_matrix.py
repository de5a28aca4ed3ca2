"""The bad-input matrix: one row per way a user's input can be wrong, run through the Python API and the CLI.

Every row must answer with ``BadInput``: one line naming the file (or option), the row/column where there is one, and
what was expected. Through the CLI (a subprocess, as a user runs it) the same message comes back as exit code 2, one
line on stderr, nothing on stdout, no traceback, and nothing written: no ``--out`` folder, no temp leftovers.

Text files go through `bayesmicro embed` (which reads them before loading any model). A row with ``cli=None`` is one
no CLI can express (listed in ``API_ONLY_NEEDS_CLI_TWIN``, plus the ``score_*`` rows that call the metrics API
directly). To add a row, add a
``Case`` to ``CASES``: a builder gets the test's tmp folder and the shared ``Assets`` and returns the ``Call``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import bayesmicro as bm
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.data.pairs import load_pairs
from bayesmicro.data.synthetic import PopulationSpec, make_population
from bayesmicro._io import check_output
from bayesmicro.cli.common import cli_message
from bayesmicro.errors import BadInput, BayesmicroWarning
from bayesmicro.evaluate.metrics import score
from bayesmicro.infer.map import Schedule
from bayesmicro.infer.results.mixture import Fit
from tests.cli.helpers import Result, assert_bad_input, run_cli


@dataclass(frozen=True)
class Assets:
    arrays: dict[str, np.ndarray]  # a valid .npz's contents: 300 pairs, d = 6, d_p = 4, group, split
    data: Path  # that .npz
    run: Path  # a valid run folder (k = 2, prompt router) fitted on it


@dataclass(frozen=True)
class Call:
    api: Callable[[], object]  # the Python API doing what the CLI does
    cli: tuple | None  # `bayesmicro` argv, or None where no CLI reads this input yet
    names: str | None  # the file/folder/option the message must name


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path, Assets], Call]
    fragments: tuple[str, ...]  # what the one-line message must say


# -- builders ---------------------------------------------------------------------------------------------------------
def text(filename: str, content: bytes, **load_kwargs) -> Callable[[Path, Assets], Call]:
    """A text pairs file read by ``load_pairs`` and by `bayesmicro embed` (which has no column-mapping flags, so a
    row with ``load_kwargs`` is API only)."""

    def build(tmp: Path, assets: Assets) -> Call:
        path = tmp / filename
        path.write_bytes(content)
        cli = None if load_kwargs else ("embed", path, "--out", tmp / "out", "--json")
        return Call(lambda: load_pairs(path, **load_kwargs), cli, str(path))

    return build


def jsonl(*rows: dict) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def gz(content: bytes, keep: int | None = None) -> bytes:
    packed = gzip.compress(content)
    return packed if keep is None else packed[:keep]


ROW = {"prompt": "p", "chosen": "a", "rejected": "b"}


def fit_like_cli(data: Path, k: int = 2, router: str = "prompt", schedule: Schedule | None = None, **kwargs) -> Fit:
    """What `bayesmicro fit DATA` does before it writes anything."""
    pairs = EmbeddedPairs.load(data).with_split(0.2, 0)
    return bm.fit(pairs, k=k, router=router, restarts=1, schedule=schedule or Schedule(), **kwargs)


def npz(*cli_options: str, api: Callable[[Path], object] | None = None, raw: bytes | None = None,
        **overrides) -> Callable[[Path, Assets], Call]:
    """An .npz of embedded pairs (the valid one with ``overrides``; ``None`` drops a key) fed to `bayesmicro fit`."""

    def build(tmp: Path, assets: Assets) -> Call:
        path = tmp / "pairs.npz"
        if raw is not None:
            path.write_bytes(raw)
        else:
            arrays = {**assets.arrays, **overrides}
            np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
        call = api or (lambda p: fit_like_cli(p))
        return Call(lambda: call(path), ("fit", path, "--k", "2", "--restarts", "1", *cli_options,
                                         "--out", tmp / "out", "--json"), str(path))

    return build


def option(*cli_options: str, api: Callable[[Path], object], names: str) -> Callable[[Path, Assets], Call]:
    """A bad `bayesmicro fit` option on valid data."""

    def build(tmp: Path, assets: Assets) -> Call:
        path = tmp / "pairs.npz"
        shutil.copy(assets.data, path)
        return Call(lambda: api(path), ("fit", path, *cli_options, "--out", tmp / "out", "--json"), names)

    return build


def run_folder(tamper: Callable[[Path], None], data: Callable[[Path, Assets], Path] | None = None,
               split: str = "test", names: str = "run") -> Callable[[Path, Assets], Call]:
    """A copy of the valid run folder, tampered, scored by `bayesmicro eval RUN DATA`."""

    def build(tmp: Path, assets: Assets) -> Call:
        run = tmp / "run"
        shutil.copytree(assets.run, run)
        tamper(run)
        pairs = data(tmp, assets) if data else assets.data

        def api():
            fitted = Fit.load(run)
            scored = EmbeddedPairs.load(pairs)
            scored = scored if split == "all" else scored.part(split)
            return score(fitted.predict_proba(scored), scored.group)

        return Call(api, ("eval", run, pairs, "--split", split, "--json"),
                    str(run) if names == "run" else str(pairs))

    return build


def edit_config(**fields) -> Callable[[Path], None]:
    def tamper(run: Path) -> None:
        config = json.loads((run / "config.json").read_text())
        config.update(fields)
        (run / "config.json").write_text(json.dumps(config))

    return tamper


def edit_params(change: Callable[[dict], dict]) -> Callable[[Path], None]:
    def tamper(run: Path) -> None:
        save_file(change(load_file(run / "params.safetensors")), run / "params.safetensors")

    return tamper


def remove(name: str) -> Callable[[Path], None]:
    return lambda run: (run / name).unlink()


def write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda run: (run / name).write_bytes(content)


def other_npz(**shapes: tuple[int, int]) -> Callable[[Path, Assets], Path]:
    def make(tmp: Path, assets: Assets) -> Path:
        path = tmp / "new.npz"
        arrays = {key: np.zeros(shapes.get(key, (5, assets.arrays[key].shape[1])), dtype=np.float32)
                  for key in ("chosen", "rejected", "prompt")}
        arrays["chosen"][:, 0] = 1.0
        np.savez(path, **arrays)
        return path

    return make


def relabel(**labels: np.ndarray) -> Callable[[Path, Assets], Path]:
    def make(tmp: Path, assets: Assets) -> Path:
        path = tmp / "new.npz"
        np.savez(path, **{**assets.arrays, **labels})
        return path

    return make


def embedded_folder(tamper: Callable[[Path], None]) -> Callable[[Path, Assets], Call]:
    """A folder written by ``EmbeddedPairs.save``, tampered, fed to `bayesmicro fit`."""

    def build(tmp: Path, assets: Assets) -> Call:
        folder = tmp / "embedded"
        EmbeddedPairs.load(assets.data).save(folder)
        tamper(folder)
        return Call(lambda: fit_like_cli(folder), ("fit", folder, "--k", "2", "--out", tmp / "out", "--json"),
                    str(folder))

    return build


def _text_to_fit(tmp: Path) -> Call:
    """Text pairs handed to `bayesmicro fit`, which reads embedded pairs (embed them first)."""
    path = tmp / "pairs.jsonl"
    path.write_bytes(jsonl(ROW))
    return Call(lambda: fit_like_cli(path), ("fit", path, "--out", tmp / "out", "--json"), str(path))


def flip_byte_of(member: str, offset: int = 400) -> Callable[[Path, Assets], Call]:
    """The valid .npz with one byte of ``member``'s data flipped (np.savez stores members uncompressed): a bad CRC."""

    def build(tmp: Path, assets: Assets) -> Call:
        raw = bytearray(assets.data.read_bytes())
        raw[raw.find(member.encode()) + offset] ^= 0xFF
        return npz(raw=bytes(raw))(tmp, assets)

    return build


def npz_damaged_header(tmp: Path, assets: Assets) -> Call:
    """An .npz whose 'chosen.npy' has a garbled header (the CRC matches: the zip is intact)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for key, value in assets.arrays.items():
            member = io.BytesIO()
            np.save(member, value)
            data = member.getvalue()
            archive.writestr(f"{key}.npy", data[:10] + b"garbage!!" + data[19:] if key == "chosen" else data)
    return npz(raw=buffer.getvalue())(tmp, assets)


def hostile_out(prepare: Callable[[Path, Assets], Path], *cli_options: str,
                api: Callable[[Path, Path], object] | None = None) -> Callable[[Path, Assets], Call]:
    """`bayesmicro fit` on valid data with an --out that must be refused before the fit; the API twin saves the
    valid run there (``api(target, data)`` instead where the check needs to know the input)."""

    def build(tmp: Path, assets: Assets) -> Call:
        path = tmp / "pairs.npz"
        shutil.copy(assets.data, path)
        target = prepare(tmp, assets)
        overwrite = "--overwrite" in cli_options
        call = (lambda: api(target, path)) if api else (lambda: Fit.load(assets.run).save(target, overwrite=overwrite))
        return Call(call, ("fit", path, "--k", "2", "--restarts", "1", *cli_options, "--out", target, "--json"),
                    str(target))

    return build


def user_folder(tmp: Path, assets: Assets) -> Path:
    (tmp / "mydir").mkdir()
    (tmp / "mydir" / "notes.txt").write_text("precious\n")
    return tmp / "mydir"


def user_file(tmp: Path, assets: Assets) -> Path:
    (tmp / "notes.txt").write_text("precious\n")
    return tmp / "notes.txt"


def previous_run(extra: str | None = None) -> Callable[[Path, Assets], Path]:
    def make(tmp: Path, assets: Assets) -> Path:
        shutil.copytree(assets.run, tmp / "previous")
        if extra:
            (tmp / "previous" / extra).write_text("precious\n")
        return tmp / "previous"

    return make


def api_only(fn: Callable[[Path, Assets], object], names: str | None = None) -> Callable[[Path, Assets], Call]:
    return lambda tmp, assets: Call(lambda: fn(tmp, assets), None, names)


N = 300


@dataclass(frozen=True)
class Poke:
    """The valid matrix ``key`` with one entry replaced."""

    key: str
    row: int
    col: int
    value: float
    dtype: type = np.float32  # the valid arrays' dtype; float64 holds values float32 cannot


def npz_poked(p: Poke, *cli_options: str) -> Callable[[Path, Assets], Call]:
    def build(tmp: Path, assets: Assets) -> Call:
        matrix = assets.arrays[p.key].astype(p.dtype)
        matrix[p.row, p.col] = p.value
        return npz(*cli_options, **{p.key: matrix})(tmp, assets)

    return build


def npz_derived(make: Callable[[dict], dict], *cli_options: str) -> Callable[[Path, Assets], Call]:
    """An .npz whose overrides are computed from the valid arrays."""

    def build(tmp: Path, assets: Assets) -> Call:
        return npz(*cli_options, **make(assets.arrays))(tmp, assets)

    return build


# -- the matrix -------------------------------------------------------------------------------------------------------
CASES: list[Case] = [
    # text pairs (load_pairs): jsonl / csv / parquet / gzip / hub
    Case("text_missing_column", text("p.jsonl", jsonl({"prompt": "p", "chosen": "a"})),
         ("missing column(s) ['rejected']", "found ['prompt', 'chosen']")),
    Case("text_misnamed_column", text("p.jsonl", jsonl({"prompt": "p", "choosen": "a", "rejected": "b"})),
         ("missing column(s) ['chosen']", "'choosen'")),
    Case("text_column_map_names_absent_column", text("p.jsonl", jsonl(ROW), columns={"chosen": "winner"}),
         ("column mapping names absent column(s) ['winner']",)),
    Case("text_file_not_found", api_only(lambda tmp, a: load_pairs(tmp / "nope.jsonl"), names="nope.jsonl"),
         ("file not found",)),
    Case("text_unknown_extension", text("p.xlsx", b"x"), ("unknown file type",)),
    Case("jsonl_empty_file", text("p.jsonl", b""), ("empty file",)),
    Case("jsonl_blank_lines_only", text("p.jsonl", b"\n\n"), ("no rows",)),
    Case("csv_only_header", text("p.csv", b"prompt,chosen,rejected\n"), ("no rows",)),
    Case("jsonl_not_utf8", text("p.jsonl", b'{"prompt": "p\xff", "chosen": "a", "rejected": "b"}\n'),
         ("line 1: not UTF-8",)),
    Case("csv_not_utf8", text("p.csv", b"prompt,chosen,rejected\np,\xfe\xff,b\n"), ("line 2: not UTF-8",)),
    Case("jsonl_gz_truncated", text("p.jsonl.gz", gz(jsonl(*[ROW] * 200), keep=40)),
         ("cannot read compressed file",)),
    Case("gz_that_is_not_gzip", text("p.jsonl.gz", jsonl(ROW)), ("cannot read compressed file",)),
    Case("jsonl_broken_line", text("p.jsonl", jsonl(ROW) + b'{"prompt": broken\n'), ("line 2: not valid JSON",)),
    Case("jsonl_line_not_an_object", text("p.jsonl", jsonl(ROW) + b"[1, 2]\n"),
         ("line 2: expected a JSON object", "got list")),
    Case("text_wrong_dtype_number", text("p.jsonl", jsonl(ROW, {**ROW, "chosen": 3})),
         ("row 1, column 'chosen': expected text, got 3",)),
    Case("text_null_value", text("p.jsonl", jsonl({**ROW, "rejected": None})),
         ("row 0, column 'rejected': expected text, got None",)),
    Case("jsonl_label_mixes_numbers_and_text", text("p.jsonl", jsonl({**ROW, "user": 1}, {**ROW, "chosen": "c",
                                                                                        "user": "x"})),
         ("column 'user' mixes number and text values (line 1: 1, line 2: 'x')",)),
    Case("label_not_a_scalar", text("p.jsonl", jsonl({**ROW, "group": ["a", "b"]})),
         ("row 0, column 'group': expected a text or number label",)),
    Case("csv_row_with_extra_fields", text("p.csv", b"prompt,chosen,rejected\np,a,b\nq,c,d,e\n"),
         ("line 3: 4 fields, expected 3",)),
    Case("csv_duplicate_header", text("p.csv", b"prompt,chosen,chosen,rejected\np,a,b,c\n"),
         ("line 1: column 'chosen' appears twice",)),
    Case("parquet_garbage", text("p.parquet", b"not a parquet file"), ("cannot parse as parquet",)),
    Case("text_all_ties", text("p.jsonl", jsonl({**ROW, "rejected": "a"}, {**ROW, "chosen": "b"})),
         ("every row has chosen == rejected",)),
    Case("hub_id_while_offline", api_only(lambda tmp, a: load_pairs("org/name"), names="org/name"),
         ("cannot load hub dataset 'org/name'", "offline")),
    # embedded pairs (.npz / folder) through `bayesmicro fit`
    Case("npz_missing_key", npz(prompt=None), ("missing key(s) ['prompt']",)),
    Case("npz_misnamed_key", npz_derived(lambda a: {"chosen": None, "chosen_emb": a["chosen"]}),
         ("missing key(s) ['chosen']", "'chosen_emb'")),
    Case("npz_unexpected_key", npz_derived(lambda a: {"weights": np.ones(N)}), ("unexpected key(s) ['weights']",)),
    Case("npz_empty_file", npz(raw=b""), ("not an .npz archive",)),
    Case("npz_truncated", lambda tmp, a: npz(raw=a.data.read_bytes()[:500])(tmp, a), ("not an .npz archive",)),
    Case("fit_given_a_text_file", lambda tmp, a: _text_to_fit(tmp),
         ("expected an embedded-pairs folder or an .npz", "embed it first: bayesmicro embed FILE --out DIR")),
    Case("npz_pickle_object_array", npz_derived(lambda a: {"group": a["group"].astype(object)}),
         ("needs pickle",)),
    Case("npz_bad_crc", flip_byte_of("chosen.npy"), ("array 'chosen' is damaged", "Bad CRC-32")),
    Case("npz_damaged_npy_header", npz_damaged_header, ("array 'chosen' is damaged",)),
    Case("npz_zero_rows", npz_derived(lambda a: {k: v[:0] for k, v in a.items()}), ("no pairs",)),
    Case("nan_in_features", npz_poked(Poke("chosen", 7, 2, np.nan)),
         ("'chosen' row 7, column 2: value nan is not finite",)),
    Case("inf_in_router_input", npz_poked(Poke("prompt", 5, 1, np.inf)),
         ("'prompt' row 5, column 1: value inf is not finite",)),
    Case("float64_value_beyond_float32", npz_poked(Poke("rejected", 4, 3, -1e301, np.float64)),
         ("'rejected' row 4, column 3: value -1e+301 overflows float32", "expected |value| <= 3.403e+38")),
    Case("dimension_mismatch_chosen_rejected", npz_derived(lambda a: {"rejected": a["rejected"][:, :5]}),
         ("'rejected' has shape (300, 5), expected (300, 6)",)),
    Case("row_count_mismatch", npz_derived(lambda a: {"prompt": a["prompt"][:-1]}),
         ("'prompt' has 299 rows, expected 300",)),
    Case("wrong_dtype_strings", npz_derived(lambda a: {"chosen": a["chosen"].astype(str)}),
         ("'chosen' has dtype <U", "expected a real floating-point matrix")),
    Case("features_not_a_matrix", npz_derived(lambda a: {"chosen": a["chosen"][:, 0]}),
         ("'chosen' has shape (300,), expected a 2-d matrix",)),
    Case("bad_split_values", npz_derived(lambda a: {"split": np.where(a["split"] == "test", "validation", "train")}),
         ("'split' has values ['validation'], expected 'train' or 'test'",)),
    Case("no_training_pairs", npz_derived(lambda a: {"split": np.full(N, "test")}),
         ("no pairs with split == 'train'",)),
    Case("k_larger_than_pairs", npz("--k", "1000", api=lambda p: fit_like_cli(p, k=1000)),
         ("k = 1000 is larger than the number of training pairs",)),
    Case("all_ties_features", npz_derived(lambda a: {"rejected": a["chosen"]}),
         ("every training pair has chosen == rejected",)),
    Case("context_router_without_context", npz("--router", "context", api=lambda p: fit_like_cli(p, router="context")),
         ("router 'context' needs a 'context' feature matrix",)),
    Case("embedded_folder_missing_features", embedded_folder(remove("features.safetensors")),
         ("features.safetensors", "missing file")),
    Case("embedded_folder_manifest_tampered", embedded_folder(write("pairs.json", b'{"format": "other"}')),
         ("'pairs.json' is not an embedded-pairs manifest",)),
    # fit options
    Case("option_unknown_optimizer", option("--optimizer", "sgd", api=lambda p: Schedule(optimizer="sgd"),
                                            names="optimizer"), ("must be auto, lbfgs or adam, got 'sgd'",)),
    Case("option_batch_size_zero", option("--optimizer", "adam", "--batch-size", "0",
                                          api=lambda p: Schedule(optimizer="adam", batch_size=0), names="batch-size"),
         ("must be ≥ 1, got 0",)),
    Case("option_alpha_nan", option("--alpha", "nan", api=lambda p: fit_like_cli(p, alpha=float("nan")),
                                    names="alpha"), ("finite number ≥ 0, got nan",)),
    Case("option_seed_negative", option("--seed", "-1", api=lambda p: fit_like_cli(p, seed=-1), names="seed"),
         ("must be an integer in [0, 4294967295], got -1",)),
    Case("option_seed_beyond_2_32", option("--seed", "4294967296", api=lambda p: fit_like_cli(p, seed=2**32),
                                           names="seed"), ("must be an integer in [0, 4294967295], got 4294967296",)),
    Case("option_restarts_zero", option("--restarts", "0", names="restarts", api=lambda p: bm.fit(
        EmbeddedPairs.load(p), k=2, restarts=0)), ("must be an integer ≥ 1, got 0",)),
    Case("option_k_zero", option("--k", "0", api=lambda p: fit_like_cli(p, k=0), names="k"),
         ("must be an integer ≥ 1, got 0",)),
    Case("api_fit_k_word", api_only(lambda tmp, a: bm.fit(EmbeddedPairs.load(a.data), k="many"), names="k"),
         ("k must be an integer ≥ 1 or 'auto', got 'many'",)),
    Case("api_fit_restarts_text", api_only(lambda tmp, a: bm.fit(EmbeddedPairs.load(a.data), restarts="3"),
                                           names="restarts"), ("restarts must be an integer ≥ 1, got '3'",)),
    Case("api_fit_data_is_a_path", api_only(lambda tmp, a: bm.fit(str(a.data)), names="data"),
         ("data must be EmbeddedPairs", "got str")),
    # --out: nothing the library did not write is moved or deleted; refused before the fit
    Case("out_foreign_nonempty_folder", hostile_out(user_folder), ("is a non-empty folder bayesmicro did not write",)),
    Case("out_existing_file", hostile_out(user_file), ("is an existing file, not a folder",)),
    Case("out_is_current_folder", hostile_out(lambda tmp, a: Path(".")), ("is the current folder or holds it",)),
    Case("out_holds_the_input", hostile_out(lambda tmp, a: tmp, api=lambda target, data: check_output(
        target, "run", inputs=(data,))), ("is or holds the input",)),
    Case("out_inside_a_file", hostile_out(lambda tmp, a: tmp / "pairs.npz" / "run"), ("cannot be created",)),
    Case("out_unwritable", hostile_out(lambda tmp, a: Path("/proc/bayesmicro-matrix/run")), ("cannot be written",)),
    Case("out_previous_run_without_overwrite", hostile_out(previous_run()),
         ("holds a previous run output: pass --overwrite to replace it",)),
    Case("out_overwrite_keeps_foreign_file", hostile_out(previous_run("notes.txt"), "--overwrite"),
         ("holds 'notes.txt', which bayesmicro did not write",)),
    # run folders through `bayesmicro eval`
    Case("run_missing_config", run_folder(remove("config.json")), ("config.json: missing file",)),
    Case("run_missing_params", run_folder(remove("params.safetensors")), ("params.safetensors: missing file",)),
    Case("run_missing_summary", run_folder(remove("summary.json")), ("summary.json: missing file",)),
    Case("run_config_not_json", run_folder(write("config.json", b"{k: 2")), ("config.json: not valid JSON",)),
    Case("run_config_edited_to_wrong_dim", run_folder(edit_config(dim=7)),
         ("'params.safetensors' heads do not have shape (S, 2, 7)",)),
    Case("run_config_wrong_type", run_folder(edit_config(k="two")),
         ("field 'k' is 'two', expected a positive integer",)),
    Case("run_config_unknown_router", run_folder(edit_config(router="sideways")), ("field 'router' is 'sideways'",)),
    Case("run_config_mismatches_router", run_folder(edit_config(hidden=64)),
         ("'params.safetensors' does not match 'config.json'",)),
    Case("run_params_replaced_by_garbage", run_folder(write("params.safetensors", b"\x80\x04garbage" * 8)),
         ("params.safetensors: not a valid safetensors file",)),
    Case("run_params_not_finite", run_folder(edit_params(lambda t: {**t, "heads": t["heads"] * np.nan})),
         ("tensor 'heads' is not finite",)),
    Case("run_params_integer_heads", run_folder(edit_params(lambda t: {**t, "heads": t["heads"].long()})),
         ("tensor 'heads' is not finite floating point (dtype torch.int64)",)),
    Case("run_summary_is_a_list", run_folder(write("summary.json", b"[1, 2]")),
         ("'summary.json' holds a JSON list, expected an object",)),
    Case("run_is_a_file", run_folder(lambda run: (shutil.rmtree(run), run.write_text("x"))), ("not a run folder",)),
    Case("new_data_dimension_mismatch", run_folder(lambda run: None, data=other_npz(chosen=(5, 9), rejected=(5, 9)),
                                                   split="all", names="data"),
         ("response features have 9 columns, the run expects 6",)),
    Case("new_data_router_dimension_mismatch", run_folder(lambda run: None, data=other_npz(prompt=(5, 5)),
                                                          split="all", names="data"),
         ("router input has 5 columns, the run expects 4",)),
    Case("eval_split_absent", run_folder(lambda run: None, data=relabel(split=np.full(N, "train")), names="data"),
         ("no pairs with split == 'test'",)),
    # metrics (API)
    Case("score_no_pairs", api_only(lambda tmp, a: score(torch.empty(0))), ("non-empty vector",)),
    Case("score_probability_out_of_range", api_only(lambda tmp, a: score(torch.tensor([0.2, 1.5]))),
         ("must lie in [0, 1]",)),
]

# Rows no CLI can express: a column mapping (the embed command has no mapping flags), a missing file passed to
# the API directly, and the hub id (the CLI twin would wait on the hub's retries).
API_ONLY_NEEDS_CLI_TWIN = ["text_column_map_names_absent_column", "text_file_not_found", "hub_id_while_offline",
                           # misuse of the Python API: the CLI's --k auto is a valid choice, its values are typed
                           "api_fit_k_word", "api_fit_restarts_text", "api_fit_data_is_a_path"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Assets:
    root = tmp_path_factory.mktemp("assets")
    data, _ = make_population(PopulationSpec(n_pairs=N, dim=6, prompt_dim=4, context_dim=3), seed=0)
    arrays = dict(chosen=data.chosen.numpy(), rejected=data.rejected.numpy(), prompt=data.prompt.numpy(),
                  group=data.group, split=data.split)
    np.savez(root / "pairs.npz", **arrays)
    fit_like_cli(root / "pairs.npz").save(root / "run")
    return Assets(arrays, root / "pairs.npz", root / "run")


def _listing(folder: Path) -> dict[str, int]:
    """Every file and folder under ``folder`` (hidden ones too) with its size: anything written shows up."""
    return {str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*")}


@dataclass
class Built:
    folder: Path
    call: Call
    before: dict[str, int]  # listing before anything ran
    cli: Result | None = None
    after_cli: dict[str, int] | None = None


@pytest.fixture(scope="module")
def built(request, assets, tmp_path_factory) -> dict[str, Built]:
    """Build every selected case in its own folder and run the CLI twins up front, a few subprocesses at a time
    (each is a real `bayesmicro` process; most of its time is Python start-up, so they overlap well)."""
    selected = {item.callspec.params["case"].id for item in request.session.items
                if item.module is request.module and "case" in getattr(getattr(item, "callspec", None), "params", {})}
    out: dict[str, Built] = {}
    for case in CASES:
        if case.id in selected:
            folder = tmp_path_factory.mktemp(case.id)
            call = case.build(folder, assets)
            out[case.id] = Built(folder, call, _listing(folder))

    def run(entry: Built) -> None:
        entry.cli = run_cli(*entry.call.cli)
        entry.after_cli = _listing(entry.folder)

    with ThreadPoolExecutor(max_workers=min(8, max(2, os.cpu_count() or 1))) as pool:
        list(pool.map(run, [entry for entry in out.values() if entry.call.cli is not None]))
    return out


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_clear_line_and_writes_nothing(case: Case, built: dict[str, Built]):
    entry = built[case.id]
    with pytest.raises(BadInput) as info:
        entry.call.api()
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in (*case.fragments, *([entry.call.names] if entry.call.names else [])):
        assert fragment in message, (fragment, message)
    if entry.call.cli is None:
        assert case.id in API_ONLY_NEEDS_CLI_TWIN or case.id.startswith("score_")
    else:
        assert_bad_input(entry.cli, *case.fragments)
        # the CLI says exactly what the API raises, an argument named by its option (seed → --seed)
        assert entry.cli.stderr.strip() == f"error: {cli_message(info.value)}"
        assert entry.after_cli == entry.before  # no --out folder, no temp leftovers
    assert _listing(entry.folder) == entry.before  # the API call wrote nothing either


def test_the_matrix_is_large_and_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 25


# -- documented behaviour (not errors) --------------------------------------------------------------------------------
def test_duplicate_pairs_are_kept_as_separate_observations(tmp_path, assets):
    """Two identical rows are two judgements (e.g. two annotators): readers keep both, and so does fitting."""
    path = tmp_path / "dup.jsonl"
    path.write_bytes(jsonl(ROW, ROW, {**ROW, "chosen": "c"}))
    assert load_pairs(path)["chosen"] == ["a", "a", "c"]
    doubled = np.concatenate([np.arange(N), np.arange(10)])
    pairs = EmbeddedPairs.load(assets.data).subset(doubled)
    fitted = bm.fit(pairs, k=1, restarts=1)
    assert fitted.summary["train_pairs"] == int((pairs.split == "train").sum()) > int(
        (assets.arrays["split"] == "train").sum())


def test_some_ties_are_kept(tmp_path):
    """A tie among real pairs stays (rows keep their file numbering); only a file of nothing but ties is an error."""
    path = tmp_path / "ties.csv"
    path.write_bytes(b"prompt,chosen,rejected\np,a,a\nq,b,c\n")
    assert load_pairs(path)["rejected"] == ["a", "c"]


def test_a_group_with_no_scored_pairs_is_left_out_of_by_group(assets):
    """eval by group: a group absent from the scored split is omitted (never reported with NaN metrics)."""
    group = assets.arrays["group"].copy()
    split = assets.arrays["split"]
    group[split == "train"] = "train_only"  # this group has no test pairs
    pairs = EmbeddedPairs.load(assets.data)
    pairs = EmbeddedPairs(pairs.chosen, pairs.rejected, pairs.prompt, group=group, split=split)
    test = pairs.part("test")
    result = score(Fit.load(assets.run).predict_proba(test), test.group)
    assert set(result["by_group"]) == set(test.group.tolist())
    assert "train_only" not in result["by_group"]
    assert sum(g["n"] for g in result["by_group"].values()) == result["n"]
    assert all(g["n"] >= 1 and np.isfinite([g["accuracy"], g["nll"], g["brier"]]).all()
               for g in result["by_group"].values())


# -- options and outputs only the CLI has ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CliCase:
    id: str
    argv: Callable[[Path, Assets], tuple]  # `bayesmicro` argv built in the case's folder
    fragments: tuple[str, ...]


def _folder_with_notes(tmp: Path) -> Path:
    (tmp / "mydir").mkdir()
    (tmp / "mydir" / "notes.txt").write_text("precious\n")
    return tmp / "mydir"


def _route_data(tmp: Path, assets: Assets) -> Path:
    """The valid pairs with a context matrix (what `route` reads)."""
    path = tmp / "routed.npz"
    np.savez(path, **assets.arrays, context=np.ones((N, 3), dtype=np.float32))
    return path


def _text_pairs(tmp: Path) -> Path:
    path = tmp / "p.jsonl"
    path.write_bytes(jsonl(ROW, {**ROW, "chosen": "c"}))
    return path


CLI_CASES: list[CliCase] = [
    CliCase("route_budgets_nan", lambda t, a: ("route", a.run, _route_data(t, a), "--budgets", "10,nan"),
            ("--budgets must be comma-separated integers ≥ 1", "'10,nan'")),
    CliCase("route_tau_nan", lambda t, a: ("route", a.run, _route_data(t, a), "--tau", "nan"),
            ("--tau must be a finite number > 0, got nan",)),
    CliCase("route_seed_negative", lambda t, a: ("route", a.run, _route_data(t, a), "--seed", "-1"),
            ("--seed must be an integer in [0, 4294967295], got -1",)),
    CliCase("fit_seed_not_a_number", lambda t, a: ("fit", a.data, "--seed", "abc"),
            ("Invalid value for '--seed'",)),
    CliCase("fit_unknown_option", lambda t, a: ("fit", a.data, "--bogus"), ("No such option: --bogus",)),
    CliCase("fit_unknown_inference", lambda t, a: ("fit", a.data, "--inference", "mcmc"),
            ("--inference must be one of map, vi, nuts, em, got 'mcmc'",)),
    CliCase("score_out_file_exists", lambda t, a: ("score", a.run, a.data, "--out", _existing(t / "scores.jsonl")),
            ("--out", "scores.jsonl' exists: pass --overwrite to replace it",)),
    CliCase("embed_out_foreign_folder", lambda t, a: ("embed", _text_pairs(t), "--out", _folder_with_notes(t)),
            ("mydir' is a non-empty folder bayesmicro did not write",)),
    CliCase("embed_out_holds_the_input", lambda t, a: ("embed", _text_pairs(t), "--out", t),
            ("is or holds the input",)),
    CliCase("export_out_foreign_folder", lambda t, a: ("export", a.run, "--weights", "static", "--backbone",
                                                       "org/model", "--out", _folder_with_notes(t)),
            ("mydir' is a non-empty folder bayesmicro did not write",)),
    CliCase("bench_out_foreign_folder", lambda t, a: ("bench", "synthetic", "--seeds", "1", "--out",
                                                      _folder_with_notes(t)),
            ("mydir' is a non-empty folder bayesmicro did not write",)),
]


def _existing(path: Path) -> Path:
    path.write_text("precious\n")
    return path


@pytest.fixture(scope="module")
def cli_built(assets, tmp_path_factory) -> dict[str, tuple[Result, dict, dict]]:
    """Every CLI-only case run up front, two at a time: (result, listing before, listing after)."""
    entries = {}
    for case in CLI_CASES:
        folder = tmp_path_factory.mktemp(case.id)
        argv = case.argv(folder, assets)
        entries[case.id] = (folder, argv, _listing(folder))

    def run(item):
        name, (folder, argv, before) = item
        return name, (run_cli(*argv), before, _listing(folder))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, entries.items()))


@pytest.mark.parametrize("case", CLI_CASES, ids=[case.id for case in CLI_CASES])
def test_cli_bad_option_or_out_is_one_line_before_any_work(case: CliCase, cli_built, assets):
    result, before, after = cli_built[case.id]
    assert_bad_input(result, *case.fragments)
    assert after == before  # nothing written, nothing moved, nothing removed


# -- right results where there used to be errors or silent changes ---------------------------------------------------
def test_csv_with_a_byte_order_mark_keeps_its_first_column(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfprompt,chosen,rejected\np,a,b\n")
    pairs = load_pairs(path)
    assert pairs.columns == ["prompt", "chosen", "rejected"]
    assert pairs["prompt"] == ["p"]


def test_a_csv_field_of_200_kb_is_read_whole(tmp_path):
    path = tmp_path / "long.csv"
    long = "x" * 200_000
    path.write_text(f"prompt,chosen,rejected\np,{long},b\n")
    assert load_pairs(path)["chosen"] == [long]


def test_number_labels_keep_their_values(tmp_path):
    path = tmp_path / "ints.jsonl"
    path.write_bytes(jsonl({**ROW, "user": 10}, {**ROW, "chosen": "c", "user": 2}))
    assert load_pairs(path)["user"] == ["10", "2"]  # the labels' exact digits, no quotes added


def test_columns_left_out_are_a_warning(tmp_path):
    path = tmp_path / "extra.jsonl"
    path.write_bytes(jsonl({**ROW, "subset": "s"}, {**ROW, "chosen": "c", "subset": "t"}))
    with pytest.warns(BayesmicroWarning, match=r"\['subset'\] are not read"):
        pairs = load_pairs(path)
    assert "subset" not in pairs.columns


def test_float64_heads_in_a_run_predict_as_float32(tmp_path, assets):
    run = tmp_path / "run"
    shutil.copytree(assets.run, run)
    params = load_file(run / "params.safetensors")
    save_file({k: v.double() for k, v in params.items()}, run / "params.safetensors")
    pairs = EmbeddedPairs.load(assets.data)
    expected = Fit.load(assets.run).predict_proba(pairs)
    assert torch.allclose(Fit.load(run).predict_proba(pairs), expected, atol=1e-6)


def test_hidden_files_in_restarts_are_not_restarts(tmp_path, assets):
    pairs = EmbeddedPairs.load(assets.data)
    bm.fit(pairs, k=2, restarts=2, keep_restarts=True).save(tmp_path / "run")
    (tmp_path / "run" / "restarts" / ".DS_Store").write_bytes(b"\x00\x01")
    assert len(Fit.load(tmp_path / "run").restart_modes) == 2


def test_vi_falling_back_to_svi_is_a_warning(monkeypatch, assets):
    from bayesmicro.infer import vi as vi_module
    from bayesmicro.infer.vi import VISchedule

    monkeypatch.setattr(vi_module, "supports_laplace", lambda model: False)  # as for a 384-d router input
    pairs = EmbeddedPairs.load(assets.data)
    with pytest.warns(BayesmicroWarning, match="using SVI over the heads and the router output layer"):
        fitted = bm.fit(pairs, k=2, restarts=1, inference="vi", vi=VISchedule(steps=20, draws=8))
    assert fitted.summary["vi"]["router_posterior"] == "svi"


def test_cli_warnings_reach_stderr_and_json(tmp_path, assets):
    """A run with collapsed heads routes to nothing, and scoring pairs embedded another way: each a warning line on
    stderr and an entry of the JSON's ``warnings``."""
    run = tmp_path / "run"
    shutil.copytree(assets.run, run)
    params = load_file(run / "params.safetensors")
    params["heads"][:, 1] = params["heads"][:, 0]
    save_file(params, run / "params.safetensors")
    summary = json.loads((run / "summary.json").read_text())
    summary["embedding"] = {"model": "m", "pooling": "mean"}
    (run / "summary.json").write_text(json.dumps(summary))
    data = tmp_path / "embedded"
    pairs = EmbeddedPairs.load(_route_data(tmp_path, assets))
    EmbeddedPairs(pairs.chosen, pairs.rejected, pairs.prompt, pairs.context, group=pairs.group, split=pairs.split,
                  meta={"embedding": {"model": "m", "pooling": "last"}}).save(data)
    result = run_cli("route", run, data, "--method", "posterior", "--budget", "5", "--json")
    assert result.code == 0, result.stderr
    warnings_ = result.json()["warnings"]
    assert any("heads 0 and 1 are collapsed (cosine 1.000)" in w for w in warnings_), warnings_
    assert any("changed no held-out prediction" in w for w in warnings_), warnings_
    assert any("embedded with another pooling 'last' (the run: 'mean')" in w for w in warnings_), warnings_
    assert all(f"warning: {w}" in result.stderr for w in warnings_)
