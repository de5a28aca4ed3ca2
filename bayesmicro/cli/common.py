"""Shared CLI plumbing: one-line errors with exit codes, JSON on stdout, tables and progress on stderr."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bayesmicro.errors import BadInput, BayesmicroWarning
from bayesmicro.methods import Router

if TYPE_CHECKING:  # the CLI starts without importing torch
    from bayesmicro.infer.results.mixture import Fit

# plain text: paths such as runs/[exp1] print as written (no rich markup), and long lines are not wrapped
stderr = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def model_key(k: int, router: str) -> str:
    """The JSON key of a run's results: single_bt, static_mixture or routed_mixture."""
    return "single_bt" if k == 1 else ("static_mixture" if Router(router) is Router.NONE else "routed_mixture")

# library argument → CLI option, where the option is not the argument's name with dashes
ARGUMENT_FLAGS = {"select": "--select-restart", "data_format": "--format", "out_dir": "--out", "as_json": "--json"}

_warnings: list[str] = []  # what this command said on stderr as warnings; emit_json adds them as "warnings"
_command: dict[str, Any] = {"name": None, "start": None}  # the running command and when it began (emit_json)
_threads: dict[str, int | None] = {"threads": None}  # `bayesmicro --threads N`: for every command


def option_flags(fn: Callable) -> dict[str, str]:
    """{parameter name: its first option name} of a typer command function."""
    flags = {}
    for name, parameter in inspect.signature(fn).parameters.items():
        decls = getattr(parameter.default, "param_decls", None) or ()
        options = [d for d in decls if isinstance(d, str) and d.startswith("--")]
        if options:
            flags[name] = options[0]
    return flags


def cli_message(exc: BadInput, flags: dict[str, str] | None = None) -> str:
    """The one line the CLI prints for ``exc``: a message about a Python argument names the CLI option instead."""
    message = str(exc)
    argument = getattr(exc, "argument", None)
    if argument and message.startswith(argument):
        flag = (flags or {}).get(argument) or ARGUMENT_FLAGS.get(argument) or "--" + argument.replace("_", "-")
        message = flag + message[len(argument):]
    return message


def warning(message: str) -> None:
    """A fallback, a dropped input or a no-op, said on stderr and kept for ``--json``'s ``warnings`` list."""
    if message in _warnings:  # said once
        return
    _warnings.append(message)
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, BayesmicroWarning):
        warning(str(message))
    else:
        _default_show(message, category, filename, lineno, file, line)


_default_show = warnings.showwarning


def cli_errors(fn: Callable) -> Callable:
    """Turn BadInput into a one-line message and exit code 2, any other failure into exit code 1; library warnings
    (``bayesmicro.errors.warn``) into ``warning:`` lines on stderr and the ``warnings`` list of ``--json``."""
    flags = option_flags(fn)

    name = fn.__name__.removesuffix("_command").replace("_", "-")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _warnings.clear()
        _command.update(name=name, start=time.perf_counter())
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", BayesmicroWarning)
                warnings.showwarning = _show_warning
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except BadInput as exc:
            print(f"error: {cli_message(exc, flags)}", file=sys.stderr)
            raise typer.Exit(2) from None
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(2) from None
        except Exception as exc:
            if os.environ.get("BAYESMICRO_DEBUG"):
                raise
            print(f"internal error: {type(exc).__name__}: {exc} (set BAYESMICRO_DEBUG=1 for a traceback)",
                  file=sys.stderr)
            raise typer.Exit(1) from None

    return wrapper


def pairs_for_run(run_dir: Path, data: Path, fitted=None):
    """(DATA as EmbeddedPairs, with the held-out split RUN_DIR was fitted with when DATA has none of its own —
    ``data.run_split``; the line about that printed on stderr, or None). ``fitted``: the run, to warn when DATA was
    embedded differently."""
    from bayesmicro.data.embedded import EmbeddedPairs
    from bayesmicro.data.run_split import with_run_split

    pairs, note = with_run_split(EmbeddedPairs.load(data), run_dir)
    if fitted is not None and (mismatch := fitted.embedding_mismatch(pairs)):
        warning(mismatch)
    if note:
        stderr.print(note)
    return pairs, note


def emit_json(obj: dict[str, Any]) -> None:
    """One JSON object on stdout, with the keys every command shares (docs/cli.md): ``command``, ``version``,
    ``seconds`` (the command's wall time; where a result's ``seconds`` is already an object of phases, as bench
    ukp's, the wall time is its ``total``) and ``warnings``."""
    from bayesmicro import __version__

    wall = time.perf_counter() - _command["start"] if _command["start"] is not None else 0.0
    obj = {**obj, "command": _command["name"], "version": __version__, "warnings": list(_warnings)}
    if isinstance(obj.get("seconds"), dict):
        obj["seconds"] = {**obj["seconds"], "total": obj["seconds"].get("total", wall)}
    else:
        obj["seconds"] = obj.get("seconds", wall)
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=float) + "\n")
    sys.stdout.flush()


def set_global_threads(threads: int | None) -> None:
    """``bayesmicro --threads N``: what ``set_threads`` uses when a command passes none."""
    if threads is not None:
        from bayesmicro._check import integer

        integer(threads, "threads", 1)
    _threads["threads"] = threads


def set_threads(threads: int | None = None) -> int:
    """Torch CPU threads. Default 1: on the 2-core machines we target, small matmuls are slower on torch's default
    pool, and even the HelpSteer2-sized fit (23,500 × 3,072, K = 10) ran faster on 1 thread than on 2 (measured)."""
    import torch

    from bayesmicro._check import integer

    threads = threads if threads is not None else _threads["threads"]
    threads = 1 if threads is None else integer(threads, "threads", 1)
    torch.set_num_threads(threads)
    return threads


@contextlib.contextmanager
def progress(description: str, total: int | None, enabled: bool = True) -> Iterator[Callable[[], None]]:
    if not enabled or not stderr.is_terminal:
        yield lambda: None
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


def print_table(title: str, rows: dict[str, dict[str, Any]], columns: tuple[str, ...]) -> None:
    table = Table(title=title)
    table.add_column("model")
    for col in columns:
        table.add_column(col, justify="right")
    for name, row in rows.items():
        table.add_row(name, *(f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns))
    stderr.print(table)


def parse_floats(text: str, option: str) -> list[float]:
    """Comma-separated finite numbers (nan and inf refused)."""
    from bayesmicro._check import numbers_list

    return numbers_list(text, option)


# heads whose cosine is above this, with norms within 0.1 %, predict alike: routing between them changes nothing
COLLAPSED_COSINE = 0.9995


def collapsed_heads(fit: Fit) -> str | None:
    """'heads 0 and 1 are collapsed (cosine 1.000)' for the first pair of the run's mean heads that coincide, or None."""
    heads = fit.heads.mean(0).double()
    norms = heads.norm(dim=1)
    for i in range(heads.shape[0]):
        for j in range(i + 1, heads.shape[0]):
            scale = float(max(norms[i], norms[j]))
            if scale == 0.0:
                return f"heads {i} and {j} are both zero"
            cosine = float(heads[i] @ heads[j]) / max(float(norms[i] * norms[j]), 1e-300)
            if cosine > COLLAPSED_COSINE and abs(float(norms[i] - norms[j])) <= 1e-3 * scale:
                return f"heads {i} and {j} are collapsed (cosine {cosine:.3f})"
    return None
