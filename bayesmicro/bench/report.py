"""What every suite writes: ``results.json`` (machine- and date-stamped), ``results.md`` (Markdown tables, mean ± sd
over seeds) and PNG plots; and the README section rendered from those files.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import json
import os
import platform
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bayesmicro._io import atomic_dir, read_json, write_bytes_atomic, write_json

RESULTS_FILE, TABLE_FILE = "results.json", "results.md"
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def machine_stamp() -> dict[str, Any]:
    """Where and when a suite ran: CPU, cores, threads, library versions and the UTC date."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def log(message: str) -> None:
    """One progress line on stderr (stdout is reserved for ``--json``)."""
    print(f"[{_dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def mean_sd(values: Sequence[float]) -> dict[str, float]:
    """{mean, sd, n} over seeds (sd with ddof=1; 0 for a single seed)."""
    arr = np.asarray(list(values), dtype=np.float64)
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if arr.size > 1 else 0.0, "n": int(arr.size)}


def fmt(cell: Any, digits: int = 4) -> str:
    """Table cell: ``{mean, sd}`` dicts as ``m ± s``, floats with ``digits`` decimals, None as an em dash."""
    if cell is None:
        return "—"
    if isinstance(cell, dict) and "mean" in cell:
        return f"{cell['mean']:.{digits}f} ± {cell['sd']:.{digits}f}"
    if isinstance(cell, bool):
        return "yes" if cell else "no"
    if isinstance(cell, float):
        return f"{cell:.{digits}f}"
    return str(cell)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], digits: int = 4) -> str:
    """A GitHub Markdown table; each row is a dict keyed by column name."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(row.get(c), digits) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def json_block(value: Any, limit: int = 6000) -> str:
    """A fenced JSON block of ``value`` (a study's nested results), cut at ``limit`` characters."""
    text = json.dumps(value, indent=1, sort_keys=True, default=str)
    return "```json\n" + (text if len(text) <= limit else text[:limit] + "\n…") + "\n```"


def budget_curve_figure(budgets: Sequence[int], curves: dict[str, tuple[np.ndarray, np.ndarray]],
                        levels: Sequence[tuple[str, float, str, str]], xlabel: str, ylabel: str, title: str = ""):
    """Accuracy vs labelled budget B on a log axis: ``curves`` {method: (mean (b,), sd (b,))} as error bars,
    ``levels`` [(name, value, line style, colour)] as horizontal reference lines. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for method, (mean, sd) in curves.items():
        ax.errorbar(budgets, mean, yerr=sd, marker="o", ms=3, capsize=2, label=method)
    for name, value, style, color in levels:
        ax.axhline(value, ls=style, color=color, lw=1, label=name)
    ax.set_xscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    return fig


_OVERWRITE: contextvars.ContextVar[bool] = contextvars.ContextVar("bench_overwrite", default=False)


@contextlib.contextmanager
def replacing(allowed: bool):
    """Within: ``write_suite`` may replace an earlier suite folder (``run_suite(overwrite=...)``)."""
    token = _OVERWRITE.set(allowed)
    try:
        yield
    finally:
        _OVERWRITE.reset(token)


def write_suite(out_dir: str | os.PathLike, suite: str, results: dict[str, Any], sections: Sequence[tuple[str, str]],
                figures: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``results.json``, ``results.md`` and ``<name>.png`` for each matplotlib figure into ``out_dir`` (the
    folder is replaced as a whole, so a reader never sees a half-written suite). ``sections``: (heading, markdown).

    Returns the stamped results dict (what ``results.json`` holds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = figures or {}
    stamped = {"suite": suite, "machine": machine_stamp(), **results,
               "files": [RESULTS_FILE, TABLE_FILE] + [f"{name}.png" for name in figures]}
    m = stamped["machine"]
    header = (f"## `{suite}`\n\n_Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), "
              f"torch {m['torch']}; run {m['date']}; seeds {stamped.get('seeds', '—')}; "
              f"regenerate with `bayesmicro bench {suite}`._\n")
    body = [header] + [f"### {title}\n\n{text}\n" for title, text in sections]
    body += [f"![{name}]({name}.png)\n" for name in figures]
    with atomic_dir(out_dir, "bench", overwrite=_OVERWRITE.get()) as tmp:
        write_json(tmp / RESULTS_FILE, stamped)
        write_bytes_atomic(tmp / TABLE_FILE, "\n".join(body).encode())
        for name, fig in figures.items():
            fig.savefig(tmp / f"{name}.png", dpi=110, bbox_inches="tight")
            plt.close(fig)
    return stamped


def load_results(out_dir: str | os.PathLike) -> dict[str, Any]:
    return read_json(Path(out_dir) / RESULTS_FILE)


def render_readme_section(results_root: str | os.PathLike, link_prefix: str = "benchmarks/results") -> str:
    """The README results section: every ``<suite>/results.md`` under ``results_root`` (sorted by suite name), with
    headings demoted one level and image links made relative to the README."""
    root = Path(results_root)
    parts = ["## Results\n\n_Generated by `python -m bayesmicro.bench.report` from the files `bayesmicro bench SUITE` "
             "writes under `benchmarks/results/`; do not edit by hand. The CPU of these runs was shared with other "
             "jobs, so timings are noisy._\n"]
    for md in sorted(root.glob(f"*/{TABLE_FILE}")):
        suite = md.parent.name
        text = md.read_text()
        text = re.sub(r"^(#+) ", lambda m_: "#" + m_.group(1) + " ", text, flags=re.M)
        text = re.sub(r"!\[([^\]]*)\]\(([^)/]+\.png)\)", rf"![\1]({link_prefix}/{suite}/\2)", text)
        parts.append(text.strip() + "\n")
    return "\n".join(parts)


def update_readme(readme: str | os.PathLike, results_root: str | os.PathLike,
                  link_prefix: str = "benchmarks/results") -> bool:
    """Replace the text between the results markers in ``readme`` (appending the markers if absent). Returns whether
    the file changed."""
    path = Path(readme)
    old = path.read_text()
    block = f"{README_START}\n{render_readme_section(results_root, link_prefix)}{README_END}"
    if README_START in old and README_END in old:
        head, rest = old.split(README_START, 1)
        new = head + block + rest.split(README_END, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    if new != old:
        write_bytes_atomic(path, new.encode())
    return new != old


RESULTS_PAGE = Path("benchmarks") / "RESULTS.md"  # the generated results page; its links are relative to benchmarks/

if __name__ == "__main__":  # python -m bayesmicro.bench.report [benchmarks/RESULTS.md] [benchmarks/results]
    args = sys.argv[1:]
    changed = update_readme(args[0] if args else RESULTS_PAGE, args[1] if len(args) > 1 else "benchmarks/results",
                            link_prefix="results")
    print("results page " + ("updated" if changed else "already up to date"))
