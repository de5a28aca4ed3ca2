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


# method → colour (matplotlib's cycle), variant → line style and marker, reference level → thin black or grey line
VARIANT_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))
LEVEL_STYLES = (("--", "k"), (":", "k"), ("-.", "0.45"), ((0, (1, 3)), "0.45"))
Curves = dict[Any, tuple]  # {method or (method, variant): (mean (b,), sd (b,) or None: no error bars)}
Levels = Sequence[tuple[str, float]]  # [(name, value)]: horizontal reference lines


def budget_curve_figure(budgets: Sequence[int], curves: Curves, levels: Levels,
                        xlabel: str, ylabel: str, title: str = "", variant_title: str = "stage 1"):
    """Accuracy vs labelled budget B on a log axis, one panel: see ``budget_curve_panels``."""
    return budget_curve_panels(budgets, {"": (curves, levels)}, xlabel, ylabel, title, variant_title)


def budget_curve_panels(budgets: Sequence[int], panels: dict[str, tuple[Curves, Levels]],
                        xlabel: str, ylabel: str, title: str = "", variant_title: str = "stage 1"):
    """Accuracy vs labelled budget B on a log axis, one panel per ``panels`` entry {panel title: (curves, levels)}.

    ``curves``: {method: (mean, sd)} or {(method, variant): (mean, sd)}, sd None for no error bars; ``levels``:
    [(name, value)] horizontal reference lines. The method is the colour, the variant the line style and marker,
    each level a thin black or grey line: up to three small legends (method, ``variant_title`` when there are
    several variants, reference) in a column right of the panels, instead of one entry per curve. Returns the
    matplotlib figure."""
    import matplotlib.pyplot as plt
    from matplotlib.legend import Legend
    from matplotlib.lines import Line2D

    keyed = {name: ({(k if isinstance(k, tuple) else (k, "")): v for k, v in curves.items()}, levels)
             for name, (curves, levels) in panels.items()}
    methods = list(dict.fromkeys(m for curves, _ in keyed.values() for m, _ in curves))
    variants = list(dict.fromkeys(v for curves, _ in keyed.values() for _, v in curves))
    references = list(dict.fromkeys(name for _, levels in keyed.values() for name, _ in levels))
    if len(variants) > len(VARIANT_STYLES) or len(references) > len(LEVEL_STYLES):
        raise ValueError(f"at most {len(VARIANT_STYLES)} variants and {len(LEVEL_STYLES)} reference levels")
    colour = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    style = dict(zip(variants, VARIANT_STYLES))
    level_style = dict(zip(references, LEVEL_STYLES))

    labels = methods + references + (variants if len(variants) > 1 else [])
    key_width = 0.7 + 0.062 * max(len(str(label)) for label in labels)  # inches: the legends' column (7 pt text)
    fig, axes = plt.subplots(1, len(keyed) + 1, figsize=(0.6 + 4.2 * len(keyed) + key_width, 3.6),
                             gridspec_kw={"width_ratios": [4.2] * len(keyed) + [key_width]}, squeeze=False)
    key, axes = axes[0][-1], axes[:, :-1]
    key.axis("off")
    for ax, (name, (curves, levels)) in zip(axes[0], keyed.items()):
        for (method, variant), (mean, sd) in curves.items():
            ls, marker = style[variant]
            ax.errorbar(budgets, mean, yerr=sd, color=colour[method], ls=ls, marker=marker, ms=3, capsize=2, lw=1.2)
        for level, value in levels:
            ls, c = level_style[level]
            ax.axhline(value, ls=ls, color=c, lw=1)
        ax.set_xscale("log")
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.set_xlabel(xlabel)
        if name:
            ax.set_title(name)
    axes[0][0].set_ylabel(ylabel)
    legends = [("method", [Line2D([], [], color=colour[m], lw=2) for m in methods], methods)]
    if len(variants) > 1:
        legends.append((variant_title, [Line2D([], [], color="0.3", ls=style[v][0], marker=style[v][1], ms=3)
                                        for v in variants], [v or "—" for v in variants]))
    if references:
        legends.append(("reference", [Line2D([], [], color=level_style[r][1], ls=level_style[r][0], lw=1)
                                      for r in references], references))
    places = (("upper left", 1.0), ("center left", 0.5), ("lower left", 0.0)) if len(legends) == 3 else (
        ("upper left", 1.0), ("lower left", 0.0))
    for (heading, handles, names), (loc, y) in zip(legends, places):
        key.add_artist(Legend(key, handles, names, title=heading, loc=loc, bbox_to_anchor=(0.0, y), fontsize=7,
                              title_fontsize=7, frameon=False, alignment="left"))
    if title and len(keyed) > 1:
        fig.suptitle(title)
    elif title:
        axes[0][0].set_title(title)
    fig.tight_layout()
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
