"""What every job shares, CLI or not: messages and tables on stderr, warnings, torch threads, the common report keys.

A job says a fallback, a dropped input or a no-op with ``warning`` (a ``BayesmicroWarning``): ``jobs.run`` lists it
under the report's ``warnings``; the CLI prints it as a ``warning:`` line, Python prints it as any warning. Imports
nothing heavy (``bayesmicro.cli.common`` re-exports these names)."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bayesmicro.errors import BayesmicroWarning
from bayesmicro.methods import Router

if TYPE_CHECKING:
    from bayesmicro.infer.results.mixture import Fit

# plain text: paths such as runs/[exp1] print as written (no rich markup), and long lines are not wrapped
stderr = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)

_threads: dict[str, int | None] = {"threads": None}  # `bayesmicro --threads N`: for every command

# heads whose cosine is above this, with norms within 0.1 %, predict alike: routing between them changes nothing
COLLAPSED_COSINE = 0.9995


def warning(message: str) -> None:
    """A fallback, a dropped input or a no-op: a ``BayesmicroWarning`` (the CLI: a ``warning:`` line on stderr), kept
    for the report's ``warnings`` list."""
    warnings.warn(message, BayesmicroWarning, stacklevel=2)


@contextlib.contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """Within the block, every ``BayesmicroWarning`` is shown once (by the printer in place: the CLI's, or Python's)
    and listed, in order, in the yielded list."""
    said: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always", BayesmicroWarning)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, BayesmicroWarning):
                if str(message) in said:  # said once
                    return
                said.append(str(message))
            shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield said


def common_keys(report: dict[str, Any], command: str, start: float, said: list[str]) -> dict[str, Any]:
    """``report`` with the keys every command's JSON shares (docs/cli.md): ``command``, ``version``, ``seconds`` (the
    job's wall time unless the report has its own; where it is an object of phases, as bench ukp's, the wall time is
    its ``total``) and ``warnings``."""
    from bayesmicro import __version__

    wall = time.perf_counter() - start
    out = {**report, "command": command, "version": __version__, "warnings": list(said)}
    if isinstance(out.get("seconds"), dict):
        out["seconds"] = {**out["seconds"], "total": out["seconds"].get("total", wall)}
    else:
        out["seconds"] = out.get("seconds", wall)
    return out


def set_global_threads(threads: int | None) -> None:
    """``bayesmicro --threads N``: what ``set_threads`` uses when a job passes none."""
    if threads is not None:
        from bayesmicro._check import integer

        integer(threads, "threads", 1)
    _threads["threads"] = threads


def set_threads(threads: int | None = None) -> int:
    """Torch CPU threads for the job: ``threads``, else ``bayesmicro --threads``, else 1 (the fits' matmuls are small,
    and torch's default pool costs more than it gives on small machines); the number set."""
    import torch

    from bayesmicro._check import integer

    threads = threads if threads is not None else _threads["threads"]
    threads = 1 if threads is None else integer(threads, "threads", 1)
    torch.set_num_threads(threads)
    return threads


def model_key(k: int, router: str) -> str:
    """The JSON key of a run's results: single_bt, static_mixture or routed_mixture."""
    return "single_bt" if k == 1 else ("static_mixture" if Router(router) is Router.NONE else "routed_mixture")


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
