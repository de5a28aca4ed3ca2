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
