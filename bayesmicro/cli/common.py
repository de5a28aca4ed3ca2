"""Shared CLI plumbing: one-line errors with exit codes, JSON on stdout, tables and progress on stderr."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bayesmicro.errors import BadInput

# plain text: paths such as runs/[exp1] print as written (no rich markup), and long lines are not wrapped
stderr = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def model_key(k: int, router: str) -> str:
    """The JSON key of a run's results: single_bt, static_mixture or routed_mixture."""
    return "single_bt" if k == 1 else ("static_mixture" if router == "none" else "routed_mixture")

def cli_errors(fn: Callable) -> Callable:
    """Turn BadInput into a one-line message and exit code 2, any other failure into exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except (BadInput, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(2) from None
        except Exception as exc:
            if os.environ.get("BAYESMICRO_DEBUG"):
                raise
            print(f"internal error: {type(exc).__name__}: {exc} (set BAYESMICRO_DEBUG=1 for a traceback)",
                  file=sys.stderr)
            raise typer.Exit(1) from None

    return wrapper


def pairs_for_run(run_dir: Path, data: Path):
    """(DATA as EmbeddedPairs, with the held-out split RUN_DIR was fitted with when DATA has none of its own —
    ``data.run_split``; the line about that printed on stderr, or None)."""
    from bayesmicro.data.embedded import EmbeddedPairs
    from bayesmicro.data.run_split import with_run_split

    pairs, note = with_run_split(EmbeddedPairs.load(data), run_dir)
    if note:
        stderr.print(note)
    return pairs, note


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=float) + "\n")
    sys.stdout.flush()


def set_threads(threads: int | None) -> int:
    """Torch CPU threads. Default 1: on the 2-core machines we target, small matmuls are slower on torch's default
    pool, and even the HelpSteer2-sized fit (23,500 × 3,072, K = 10) ran faster on 1 thread than on 2 (measured)."""
    import torch

    if threads is None:
        threads = 1
    if threads < 1:
        raise BadInput(f"--threads must be ≥ 1, got {threads}")
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
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BadInput(f"{option} expects comma-separated numbers, got {text!r}") from None
