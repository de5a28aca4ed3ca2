"""Content-addressed embedding cache: safetensors shards + a JSON manifest with checksums.

Layout: ``<root>/<settings digest>/manifest.json`` and ``shard-000000.safetensors``, … . The folder is named by
a hash of the embedding settings (model + revision, pooling, template, max length, storage dtype); a row is
found by the hash of its exact text (and whether the tokenizer adds special tokens). Each shard holds one
extraction batch: the shard file is written first, then the manifest that lists it, each by temp-file + rename,
so a process killed at any moment leaves a consistent cache (an unlisted shard is ignored and rewritten).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from bayesmicro._io import read_json, write_json
from bayesmicro.errors import BadInput

FORMAT = "bayesmicro.embedding_cache/1"
MANIFEST = "manifest.json"
ENV_VAR = "BAYESMICRO_CACHE"
STORAGE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def default_cache_root() -> Path:
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "bayesmicro" / "embeddings").expanduser()


def settings_digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]


def text_key(text: str, special: bool) -> str:
    return hashlib.sha256((("S" if special else "N") + "\0" + text).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class EmbeddingCache:
    """Rows of one embedding setting, keyed by :func:`text_key`. ``root=None`` keeps them in memory only."""

    def __init__(self, root: str | os.PathLike | None, settings: dict[str, Any], storage_dtype: str = "float16"):
        if storage_dtype not in STORAGE_DTYPES:
            raise BadInput(f"storage dtype must be one of {sorted(STORAGE_DTYPES)}, got {storage_dtype!r}")
        self.settings = dict(settings, storage_dtype=storage_dtype)
        self.dtype = STORAGE_DTYPES[storage_dtype]
        self.folder = None if root is None else Path(root).expanduser() / settings_digest(self.settings)
        self._shards: list[dict[str, Any]] = []
        self._rows: dict[str, tuple[int, int]] = {}  # key -> (shard number, row)
        self._memory: list[torch.Tensor] = []
        self.dim: int | None = None
        if self.folder is not None:
            self._open()

    # -- reading ------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        path = self.folder / MANIFEST
        if not path.is_file():
            return
        manifest = read_json(path)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BadInput(f"not an embedding-cache manifest (format {FORMAT!r}); delete the folder to rebuild it",
                           source=str(path))
        self.dim = manifest.get("dim")
        for entry in manifest.get("shards", []):
            file = self.folder / entry["file"]
            if not file.is_file() or _file_sha256(file) != entry["sha256"]:
                print(f"warning: {file}: missing or damaged cache shard; it and later shards will be recomputed",
                      file=sys.stderr)
                break
            with safe_open(str(file), framework="pt") as fh:
                keys = json.loads(fh.metadata()["keys"])
                values = fh.get_tensor("embeddings")
            if len(keys) != values.shape[0] or len(keys) != entry["rows"]:
                raise BadInput("cache shard rows do not match its key list; delete the cache folder",
                               source=str(file))
            self._add(dict(entry, keys=keys), values)

    def _add(self, entry: dict[str, Any], values: torch.Tensor) -> None:
        number = len(self._shards)
        self._shards.append(entry)
        self._memory.append(values)
        for row, key in enumerate(entry["keys"]):
            self._rows.setdefault(key, (number, row))

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, keys: list[str]) -> torch.Tensor:
        """(len(keys), d) stored rows, in the storage dtype."""
        missing = [k for k in keys if k not in self._rows]
        if missing:
            raise KeyError(f"{len(missing)} keys not in the cache")
        if not keys:
            return torch.empty(0, self.dim or 0, dtype=self.dtype)
        shard = torch.tensor([self._rows[k][0] for k in keys])
        row = torch.tensor([self._rows[k][1] for k in keys])
        out = torch.empty(len(keys), self.dim, dtype=self.dtype)
        for number in shard.unique().tolist():
            where = (shard == number).nonzero().squeeze(1)
            out[where] = self._memory[number][row[where]]
        return out

    # -- writing ------------------------------------------------------------------------------------------------
    def put(self, keys: list[str], values: torch.Tensor) -> None:
        """Store one batch of rows ((len(keys), d), any float dtype) as a new shard, atomically."""
        values = values.detach().to("cpu")
        if self.dtype == torch.float16 and bool((values.abs() > torch.finfo(torch.float16).max).any()):
            raise BadInput("features exceed the float16 range; store them as bfloat16 or float32 "
                           "(Embedder(..., storage_dtype='float32'))")
        values = values.to(self.dtype).contiguous()
        if self.dim is None:
            self.dim = int(values.shape[1])
        entry: dict[str, Any] = {"rows": len(keys)}
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = f"shard-{len(self._shards):06d}.safetensors"
            _write_shard(self.folder / name, keys, values)
            entry.update(file=name, sha256=_file_sha256(self.folder / name))
        self._add(dict(entry, keys=list(keys)), values)
        if self.folder is not None:
            write_json(self.folder / MANIFEST, self._manifest())

    def _manifest(self) -> dict[str, Any]:
        return {"format": FORMAT, "settings": self.settings, "dim": self.dim,
                "dtype": str(self.dtype).removeprefix("torch."),
                "shards": [{k: v for k, v in s.items() if k != "keys"} for s in self._shards]}

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive writer lock (two extractions into one cache folder wait for each other)."""
        if self.folder is None:
            yield
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def remove_stale_temp_files(self) -> None:
        """Temp files of a killed writer (call while holding the lock)."""
        if self.folder is not None and self.folder.is_dir():
            for tmp in self.folder.glob(".*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()

    def reload(self) -> None:
        """Re-read the manifest (another process may have added shards); no-op for an in-memory cache."""
        if self.folder is None:
            return
        self._shards, self._rows, self._memory, self.dim = [], {}, [], None
        self._open()


def _write_shard(path: Path, keys: list[str], values: torch.Tensor) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({"embeddings": values}, tmp, metadata={"keys": json.dumps(keys)})
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
