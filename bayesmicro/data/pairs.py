"""Text preference pairs: an HF ``datasets.Dataset`` with a checked schema, and readers for files and hub ids."""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bayesmicro.errors import BadInput, warn

# `datasets` takes a second to import and every CLI process imports this module: it is imported where it is used.
if TYPE_CHECKING:
    import datasets

REQUIRED_COLUMNS = ("prompt", "chosen", "rejected")
OPTIONAL_COLUMNS = ("context", "group", "user", "split")
_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class PreferencePairs:
    """Triples (prompt, chosen, rejected) with optional ``context``, ``group`` and ``user``, all strings.

    Wraps a ``datasets.Dataset`` (``.dataset``); the constructor checks the schema, so every instance is valid.
    """

    def __init__(self, dataset: datasets.Dataset, source: str = "<pairs>"):
        self.source = source
        self.dataset = _checked(dataset, source)

    @classmethod
    def from_dict(cls, columns: Mapping[str, list[Any]], source: str = "<dict>") -> "PreferencePairs":
        import datasets

        return cls(datasets.Dataset.from_dict(dict(columns)), source)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, column: str) -> list[str]:
        return self.dataset[column]

    @property
    def columns(self) -> list[str]:
        return list(self.dataset.column_names)

    def has(self, column: str) -> bool:
        return column in self.dataset.column_names

    def select(self, indices) -> "PreferencePairs":
        return PreferencePairs(self.dataset.select(indices), self.source)

    def __repr__(self) -> str:
        return f"PreferencePairs(n={len(self)}, columns={self.columns}, source={self.source!r})"


def _checked(ds: datasets.Dataset, source: str) -> datasets.Dataset:
    import datasets

    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise BadInput(
            f"missing column(s) {missing}; expected {list(REQUIRED_COLUMNS)} (found {ds.column_names}); "
            "map other names with columns={'prompt': 'your_name', ...}",
            source=source,
        )
    if len(ds) == 0:
        raise BadInput("no rows (expected at least one preference pair)", source=source)
    keep = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in ds.column_names]
    ds = ds.select_columns(keep)
    for column in keep:
        values = ds[column]
        for row, value in enumerate(values):
            if value is None or (column in REQUIRED_COLUMNS and not isinstance(value, str)):
                expected = "text" if column in REQUIRED_COLUMNS else "a value"
                raise BadInput(f"row {row}, column '{column}': expected {expected}, got {value!r}", source=source)
            if not isinstance(value, (str, int, float, bool)):
                raise BadInput(f"row {row}, column '{column}': expected a text or number label, got {value!r}",
                               source=source)
        if ds.features[column] != datasets.Value("string"):
            with _quiet_datasets():
                ds = ds.cast_column(column, datasets.Value("string"))
    # A tie carries no preference (every BT model gives it probability ½); a file of only ties is a wrong column map.
    if all(c == r for c, r in zip(ds["chosen"], ds["rejected"])):
        raise BadInput("every row has chosen == rejected (expected at least one pair of different responses; "
                       "ties are kept, but a file of only ties carries no preference)", source=source)
    return ds


def _file_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if not suffixes or suffixes[-1] not in _FORMATS:
        raise BadInput(f"unknown file type; expected one of {sorted(_FORMATS)} (optionally .gz)", source=str(path))
    return _FORMATS[suffixes[-1]]


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    return "text" if isinstance(value, str) else "number" if isinstance(value, (int, float)) else "other"


def _check_text_file(path: Path, fmt: str) -> dict[str, list[tuple[int, Any]]]:
    """Find the first undecodable byte or broken JSON line, so the error can name the row. Returns, for each JSON
    column whose values mix kinds (text, number, boolean), the first (line, value) of each kind: ``datasets`` would
    turn such a column into text with quotes added to some values."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    kinds: dict[str, dict[str, tuple[int, Any]]] = {}
    try:
        lineno = 0
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise BadInput(f"line {lineno}: not UTF-8 text ({exc.reason})", source=str(path)) from None
                if fmt == "json" and line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise BadInput(f"line {lineno}: not valid JSON ({exc.msg})", source=str(path)) from None
                    if not isinstance(record, dict):
                        raise BadInput(f"line {lineno}: expected a JSON object {{\"prompt\": ..., \"chosen\": ..., "
                                       f"\"rejected\": ...}}, got {type(record).__name__}", source=str(path))
                    for column, value in record.items():
                        kind = _kind(value)
                        if kind is not None:
                            kinds.setdefault(column, {}).setdefault(kind, (lineno, value))
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        raise BadInput(f"cannot read compressed file ({exc})", source=str(path)) from None
    if lineno == 0:  # a compressed file can be non-empty on disk and hold nothing
        raise BadInput("empty file (expected a header or records)", source=str(path))
    return {column: sorted(seen.values()) for column, seen in kinds.items() if len(seen) > 1}


def _check_csv(path: Path) -> list[str]:
    """Header without duplicate or empty names, and every record with as many fields as the header.

    pandas would otherwise rename duplicates (``chosen.1``) or turn the first fields of a long row into an index,
    silently shifting every column. Returns the header.
    """
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # a long response is a response: no 128 KiB cap on a field
    try:
        with opener(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
            return _csv_header(csv.reader(text), path)
    except csv.Error as exc:
        raise BadInput(f"cannot parse as csv ({exc})", source=str(path)) from None
    finally:
        csv.field_size_limit(limit)


def _csv_header(reader, path: Path) -> list[str]:
    header = next(reader, [])
    seen = set()
    for name in header:
        if not name.strip():
            raise BadInput(f"line 1: empty column name in the header {header}", source=str(path))
        if name in seen:
            raise BadInput(f"line 1: column '{name}' appears twice in the header", source=str(path))
        seen.add(name)
    for record in reader:
        if record and len(record) != len(header):
            raise BadInput(f"line {reader.line_num}: {len(record)} fields, expected {len(header)} "
                           f"(the header's {header})", source=str(path))
    return header


@contextlib.contextmanager
def _quiet_datasets():
    """No progress bars or parse warnings from ``datasets`` on stderr: a CLI error must stay one line."""
    import datasets

    bars_were_off = datasets.are_progress_bars_disabled()
    verbosity = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if not bars_were_off:
            datasets.enable_progress_bars()


def read_table(path: str | os.PathLike, mixed: dict | None = None) -> datasets.Dataset:
    """Read a .jsonl/.csv/.parquet file (optionally gzip-compressed) into a ``datasets.Dataset``. ``mixed``: filled
    with the JSON columns whose values mix text, numbers and booleans (see ``_check_text_file``)."""
    import datasets

    path = Path(path)
    if not path.is_file():
        raise BadInput("file not found", source=str(path))
    fmt = _file_format(path)
    if path.stat().st_size == 0:
        raise BadInput("empty file (expected a header or records)", source=str(path))
    options = {}
    if fmt != "parquet":
        found = _check_text_file(path, fmt)
        if mixed is not None:
            mixed.update(found)
    if fmt == "csv":
        # In a CSV every field is text: "42" is a response, not a number, and an empty field is empty text.
        header = _check_csv(path)
        options = dict(features=datasets.Features({name: datasets.Value("string") for name in header}),
                       na_filter=False, encoding="utf-8-sig")  # a byte-order mark is not part of the first name
    try:
        with _quiet_datasets():
            ds = datasets.load_dataset(fmt, data_files=str(path), split="train", **options)
    except BadInput:
        raise
    except Exception as exc:
        if "corresponds to no data" in str(exc):
            raise BadInput("no rows (only a header?)", source=str(path)) from None
        first_line = (str(exc).splitlines() or [""])[0][:200]
        raise BadInput(f"cannot parse as {fmt} ({type(exc).__name__}: {first_line})",
                       source=str(path)) from None
    if len(ds) == 0:
        raise BadInput("no rows (only a header?)", source=str(path))
    return ds


def read_hub(repo_id: str, split: str = "train", config: str | None = None) -> datasets.Dataset:
    """Load a split from the Hugging Face hub (needs network or a warm HF cache)."""
    import datasets

    try:
        with _quiet_datasets():
            return datasets.load_dataset(repo_id, config, split=split)
    except Exception as exc:
        raise BadInput(
            f"cannot load hub dataset '{repo_id}' (split {split!r}): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''} — offline? pass a local file instead",
            source=repo_id,
        ) from None


def is_local(path: str | os.PathLike) -> bool:
    return Path(path).exists() or any(str(path).lower().endswith(ext) for ext in (*_FORMATS, ".gz"))


def load_pairs(
    source: str | os.PathLike,
    columns: Mapping[str, str] | None = None,
    split: str = "train",
) -> PreferencePairs:
    """Read preference pairs from a local file or a hub id.

    ``columns`` maps the schema name to the source's column name, e.g. ``{"prompt": "question"}``.
    """
    mixed: dict[str, list[tuple[int, Any]]] = {}
    ds = read_table(source, mixed) if is_local(source) else read_hub(str(source), split=split)
    if columns:
        absent = [src for src in columns.values() if src not in ds.column_names]
        if absent:
            raise BadInput(f"column mapping names absent column(s) {absent} (found {ds.column_names})",
                           source=str(source))
        ds = ds.rename_columns({src: dst for dst, src in columns.items() if src != dst})
    renamed = {src: dst for dst, src in (columns or {}).items()}
    for raw, found in mixed.items():
        column = renamed.get(raw, raw)
        if column in OPTIONAL_COLUMNS:  # the text columns are checked row by row
            shown = ", ".join(f"line {line}: {value!r}" for line, value in found)
            raise BadInput(f"column '{column}' mixes {' and '.join(_kind(v) for _, v in found)} values ({shown}); "
                           "a label keeps its exact value and type: make them all text or all numbers",
                           source=str(source))
    dropped = [c for c in ds.column_names if c not in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)]
    pairs = PreferencePairs(ds, str(source))  # the schema checked first: a bad file is one error line
    if dropped:
        warn(f"{source}: column(s) {dropped} are not read (only {list(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)} are; "
             "a --protocol or a column mapping reads others)")
    return pairs
