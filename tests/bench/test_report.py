import json

from bayesmicro.bench.report import (README_END, README_START, fmt, markdown_table, mean_sd, update_readme,
                                     write_suite)


def test_mean_sd_and_formatting():
    stats = mean_sd([1.0, 2.0, 4.0])
    assert stats["mean"] == 7 / 3 and stats["n"] == 3
    assert abs(stats["sd"] - 1.5275252316519468) < 1e-12
    assert mean_sd([0.3])["sd"] == 0.0
    assert fmt({"mean": 0.12345, "sd": 0.01}) == "0.1235 ± 0.0100"
    assert markdown_table([{"a": 1.0, "b": None}], ["a", "b"]).splitlines() == ["| a | b |", "|---|---|",
                                                                             "| 1.0000 | — |"]


def test_write_suite_then_readme_section_is_replaced_between_markers(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    out = tmp_path / "results" / "demo"
    stamped = write_suite(out, "demo", {"seeds": [0], "value": 1.5}, [("Table", "| x |\n|---|\n| 1 |")],
                          {"curve": fig})
    saved = json.loads((out / "results.json").read_text())
    assert saved == stamped
    assert {"suite", "machine", "files", "seeds", "value"} <= set(saved)
    assert saved["files"] == ["results.json", "results.md", "curve.png"]
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert saved["machine"]["date"] in (out / "results.md").read_text()

    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nintro\n\n{README_START}\nstale\n{README_END}\n\n## after\n")
    assert update_readme(readme, tmp_path / "results")
    text = readme.read_text()
    assert "stale" not in text and text.startswith("# title\n\nintro\n") and text.endswith("## after\n")
    block = text.split(README_START)[1].split(README_END)[0]
    assert "### `demo`" in block and "#### Table" in block
    assert "![curve](benchmarks/results/demo/curve.png)" in block
    assert not update_readme(readme, tmp_path / "results")  # idempotent


def test_readme_without_markers_gets_them_appended(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# title\n")
    (tmp_path / "results").mkdir()
    update_readme(readme, tmp_path / "results")
    text = readme.read_text()
    assert text.startswith("# title\n") and text.count(README_START) == 1 and text.rstrip().endswith(README_END)


def test_repository_readme_section_matches_the_committed_results():
    from pathlib import Path

    from bayesmicro.bench.report import render_readme_section

    root = Path(__file__).resolve().parents[2]
    page = (root / "benchmarks" / "RESULTS.md").read_text()
    section = page.split(README_START)[1].split(README_END)[0]
    assert section.strip() == render_readme_section(root / "benchmarks" / "results", "results").strip(), (
        "benchmarks/RESULTS.md is stale: run `python -m bayesmicro.bench.report`")


def _legends_and_curves(fig, budgets):
    """(entries per legend, number of curves drawn over the budgets, number of horizontal reference lines)."""
    from matplotlib.legend import Legend

    legends = [len(legend.get_texts()) for legend in fig.findobj(Legend)]
    lines = [line for ax in fig.axes for line in ax.get_lines()]
    curves = [line for line in lines if list(line.get_xdata()) == list(budgets) and line.get_linestyle() != "None"]
    levels = [line for line in lines if list(line.get_xdata()) == [0, 1]]
    return legends, len(curves), len(levels)


def test_budget_curves_show_every_curve_with_small_legends():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from bayesmicro.bench.report import budget_curve_figure, budget_curve_panels

    budgets, rng = [10, 25, 50, 100], np.random.default_rng(0)

    def curve(sd=True):
        return rng.uniform(0.5, 0.9, 4), (rng.uniform(0, 0.05, 4) if sd else None)

    # hh's shape: 2 panels × 3 methods × 3 stage-1 variants + 3 levels per panel (was one legend of 12 entries)
    methods, variants = ("hedge", "posterior", "hyre"), ("smooth", "paper", "restart by context")
    panels = {g: ({(m, v): curve(v == "smooth") for m in methods for v in variants},
                  [("oracle", 0.9), ("stage 1", 0.6), ("single_bt", 0.55)]) for g in ("harmless", "helpful")}
    fig = budget_curve_panels(budgets, panels, "B", "accuracy", "title")
    legends, curves, levels = _legends_and_curves(fig, budgets)
    assert sorted(legends) == [3, 3, 3] and curves == 2 * 9 and levels == 2 * 3
    plt.close(fig)
    # synthetic's shape: one panel, 4 methods, no variants (no stage-1 legend)
    fig = budget_curve_figure(budgets, {m: curve() for m in ("hedge", "posterior", "amortized", "hyre")},
                              [("oracle", 0.9), ("micro_stage1", 0.7), ("single_bt", 0.69)], "B", "accuracy")
    legends, curves, levels = _legends_and_curves(fig, budgets)
    assert sorted(legends) == [3, 4] and curves == 4 and levels == 3
    plt.close(fig)


def test_committed_budget_curve_figures_have_small_legends():
    # the suites' own figure code on the repository's results (no refit)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bayesmicro.bench import hh, synthetic
    from bayesmicro.bench.report import load_results
    from tests.common import ROOT

    results = load_results(ROOT / "benchmarks" / "results" / "hh")
    fig = hh._figures(results)["budget_curves"]
    legends, curves, levels = _legends_and_curves(fig, results["budgets"])
    runs = sum(len(results["stage2" + suffix]) for suffix in hh.STAGE2_SUFFIXES)
    assert max(legends) <= 6 and curves == len(results["subsets"]) * runs and levels == 3 * len(results["subsets"])
    plt.close("all")
    results = load_results(ROOT / "benchmarks" / "results" / "synthetic")
    fig = synthetic._budget_curves(results)
    legends, curves, levels = _legends_and_curves(fig, results["budgets"])
    assert max(legends) <= 6 and curves == len(results["stage2"]) and levels == 3
    plt.close(fig)
