"""Atomic writes: everything lands in a temporary sibling first and is renamed into place."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file

from bayesmicro.errors import BadInput


# Every folder this library writes holds this file: {"kind": ..., "files": [the top-level entries it wrote]}. Only
# such a folder, of the same kind, may be replaced (``overwrite``); nothing else is ever moved or deleted.
MARKER = ".bayesmicro-output.json"
OUTPUT_KINDS = ("run", "embedded_pairs", "shard_store", "export", "bench", "checkpoint")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _user_mode(path: Path, directory: bool) -> None:
    """Give ``path`` (made by mkstemp/mkdtemp: 600/700) the mode a plain open/mkdir would: the user's umask."""
    with contextlib.suppress(OSError):
        os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def read_marker(folder: Path) -> dict | None:
    """The marker of a folder this library wrote, or None."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("files"), list) else None


def add_to_marker(folder: Path, *names: str) -> None:
    """Record files written into a finished output folder later (``diagnose`` into a run), so that ``overwrite``
    may still replace it."""
    marker = read_marker(folder)
    if marker is not None:
        marker["files"] = sorted(set(marker["files"]) | set(names))
        write_json(Path(folder) / MARKER, marker)


def _legacy_marker(folder: Path, kind: str) -> dict | None:
    """A benchmark folder written before markers: its results.json lists every file the suite wrote."""
    if kind != "bench":
        return None
    try:
        results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    files = results.get("files") if isinstance(results, dict) else None
    if isinstance(files, list) and all(isinstance(f, str) for f in files) and "suite" in results:
        return {"kind": "bench", "files": files}
    return None


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_output(target: str | os.PathLike, kind: str, *, overwrite: bool = False,
                 inputs: tuple[str | os.PathLike | None, ...] = (), argument: str = "out",
                 is_file: bool = False) -> Path:
    """Refuse, before any work, an output location this library may not write (a ``BadInput`` naming it): ``.`` or a
    folder holding it, a folder holding (or being) one of ``inputs``, an existing file, a non-empty folder this
    library did not write for ``kind``, a previous output without ``overwrite``, a place the user cannot write.
    ``is_file``: the output is one file (``score --out``): an existing file is replaced only with ``overwrite``."""
    path = Path(target)
    where = f"{argument} {str(path)!r}"
    if not str(target).strip():
        raise BadInput(f"{argument} must be a path, got {str(target)!r}", argument=argument)
    try:
        full = path.resolve()
        cwd = Path.cwd().resolve()
    except (OSError, RuntimeError) as exc:
        raise BadInput(f"{where} cannot be resolved ({exc})", argument=argument) from None
    if _is_within(cwd, full):
        raise BadInput(f"{where} is the current folder or holds it: write into a new folder", argument=argument)
    for given in inputs:
        if given is None or not str(given):
            continue
        source = Path(given)
        if not source.exists():
            continue
        held = source.resolve()
        if _is_within(held, full):
            raise BadInput(f"{where} is or holds the input {str(given)!r}: write into a new folder",
                           argument=argument)
        if source.is_dir() and _is_within(full, held):
            raise BadInput(f"{where} lies inside the input folder {str(given)!r}: write into a new folder",
                           argument=argument)
    if path.is_symlink():
        raise BadInput(f"{where} is a symbolic link: give a new path", argument=argument)
    if path.exists():
        if is_file:
            if path.is_dir():
                raise BadInput(f"{where} is a folder, expected a file path", argument=argument)
            if not overwrite:
                raise BadInput(f"{where} exists: pass --overwrite to replace it, or give a new path",
                               argument=argument)
        elif not path.is_dir():
            raise BadInput(f"{where} is an existing file, not a folder: give a new folder", argument=argument)
        else:
            _check_existing_folder(path, kind, overwrite, where, argument)
    _check_writable(path, where, argument)
    return path


def _check_existing_folder(path: Path, kind: str, overwrite: bool, where: str, argument: str) -> None:
    try:
        entries = sorted(os.listdir(path))
    except OSError as exc:
        raise BadInput(f"{where} cannot be read ({exc.strerror})", argument=argument) from None
    if not entries:
        return
    marker = read_marker(path) or _legacy_marker(path, kind)
    if marker is None:
        raise BadInput(f"{where} is a non-empty folder bayesmicro did not write: give a new or empty folder",
                       argument=argument)
    if marker.get("kind") != kind:
        raise BadInput(f"{where} holds a different bayesmicro output ({marker.get('kind')}, not {kind}): give a new "
                       "folder", argument=argument)
    if not overwrite:
        raise BadInput(f"{where} holds a previous {kind} output: pass --overwrite to replace it, or give a new folder",
                       argument=argument)
    foreign = [name for name in entries if name != MARKER and name not in marker["files"]]
    if foreign:
        raise BadInput(f"{where} holds {foreign[0]!r}, which bayesmicro did not write: move it away before "
                       "--overwrite, or give a new folder", argument=argument)


def _check_writable(path: Path, where: str, argument: str) -> None:
    """The nearest existing folder at or above ``path``'s parent must be a folder the user can write into."""
    parent = path.parent if str(path.parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BadInput(f"{where} cannot be created: {str(parent)!r} is a file", argument=argument)
    # try it (permission bits say nothing to root, on a read-only mount or in /proc): a probe folder, removed at once
    for folder in (parent, *([path] if path.is_dir() else [])):
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".bayesmicro-probe.", dir=folder))
        except OSError as exc:
            raise BadInput(f"{where} cannot be written: {exc.strerror or exc} in {str(folder)!r}",
                           argument=argument) from None


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, kind: str, *, overwrite: bool = False,
               inputs: tuple[str | os.PathLike | None, ...] = ()) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success rename it into place.

    ``target`` must pass ``check_output`` (call that before the work, too): it does not exist, is empty, or (with
    ``overwrite``) is an earlier output of the same ``kind`` holding only what bayesmicro wrote, which is then
    replaced whole. The folder gets a marker listing what it holds, and the user's umask."""
    target = Path(target)
    check_output(target, kind, overwrite=overwrite, inputs=inputs)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))
    _user_mode(tmp, directory=True)
    try:
        write_json(tmp / MARKER, {"kind": kind, "files": [], "writing": True})
        yield tmp
        names = sorted(name for name in os.listdir(tmp) if name != MARKER)
        write_json(tmp / MARKER, {"kind": kind, "files": names})
        if target.exists() and any(target.iterdir()):
            check_output(target, kind, overwrite=overwrite)  # unchanged since the work began
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".old", dir=target.parent))
            os.rmdir(old)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)  # onto an empty folder, or where nothing was
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_siblings(target: Path) -> None:
    """Delete what a killed writer of ``target`` left behind: its temp and ``.old`` folders (marked by this library)
    of dead processes. Nothing ever reads these; a live writer's folders and anything unmarked are kept."""
    for suffix in ("tmp", "old"):
        for item in target.parent.glob(f".{glob.escape(target.name)}.*.{suffix}"):
            pid = item.name[len(target.name) + 2:].split(".", 1)[0]
            if (item.is_dir() and not item.is_symlink() and pid.isdigit() and not _alive(int(pid))
                    and (item / MARKER).is_file()):
                shutil.rmtree(item, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _user_mode(Path(tmp), directory=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise BadInput("missing file (expected a JSON file here)", source=str(path))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"not valid JSON ({exc})", source=str(path)) from None


def write_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
        _user_mode(Path(tmp), directory=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file (never unpickles); a damaged file is a BadInput."""
    path = Path(path)
    if not path.is_file():
        raise BadInput("missing file (expected a .safetensors file here)", source=str(path))
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise BadInput(f"not a valid safetensors file ({exc})", source=str(path)) from None
