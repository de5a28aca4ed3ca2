"""docs/reliability.md quotes numbers that come from the test files; this keeps them equal."""

from __future__ import annotations

import re

from tests.cli.helpers import ROOT
from tests.test_bad_input_matrix import API_ONLY_NEEDS_CLI_TWIN, CASES
from tests.test_interruption import SCENARIOS
from tests.test_properties import TOTAL_EXAMPLES


def _row(readme: str, label: str) -> int:
    match = re.search(rf"^\| {re.escape(label)}[^|]*\| (\d+) \|", readme, flags=re.M)
    assert match, f"docs/reliability.md table has no row starting {label!r}"
    return int(match.group(1))


def test_readme_reliability_table_matches_the_tests():
    readme = (ROOT / "docs" / "reliability.md").read_text()
    api_only = [c for c in CASES if c.id in API_ONLY_NEEDS_CLI_TWIN or c.id.startswith("score_")]
    assert _row(readme, "bad-input cases") == len(CASES)
    assert _row(readme, "… of which also run through the CLI") == len(CASES) - len(api_only)
    assert _row(readme, "interruption scenarios") == SCENARIOS
    assert _row(readme, "property-test examples per run") == TOTAL_EXAMPLES
