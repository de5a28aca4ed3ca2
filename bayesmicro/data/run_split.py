"""The held-out split a run was fitted with, kept in the run folder when ``bayesmicro fit`` drew it.

``bayesmicro fit DATA`` on pairs without a ``split`` column holds out a random ``--test-fraction`` (seeded) and
fits on the rest. ``split.json`` in the run folder records which rows were held out and a fingerprint of DATA, so
that ``eval``, ``score``, ``diagnose`` and ``route`` on the same DATA score the same held-out pairs — not pairs the
run was fitted on — and PSIS-LOO sees exactly the pairs the posterior conditions on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bayesmicro._io import read_json, write_json
from bayesmicro.data.embedded import EmbeddedPairs
from bayesmicro.errors import BadInput

SPLIT_FILE = "split.json"
SPLIT_FORMAT = "bayesmicro.run_split/1"


def write_run_split(folder: Path, pairs: EmbeddedPairs, test_fraction: float, seed: int) -> None:
    """Record ``pairs``' held-out rows (their ``split`` == "test") in ``folder``/split.json."""
    test = np.flatnonzero(pairs.split == "test")
    write_json(Path(folder) / SPLIT_FILE, {
        "format": SPLIT_FORMAT, "n": len(pairs), "fingerprint": pairs.fingerprint(),
        "test_fraction": test_fraction, "seed": seed, "test": test.tolist()})


def with_run_split(pairs: EmbeddedPairs, run_dir: Path) -> tuple[EmbeddedPairs, str | None]:
    """``pairs`` with the split ``run_dir`` was fitted with, when they have none of their own and are the pairs
    the run's split.json was drawn on; and a line saying what was done (None when there was nothing to do)."""
    path = Path(run_dir) / SPLIT_FILE
    if pairs.split is not None or not path.exists():
        return pairs, None
    record = read_json(path)
    test = _checked_test_rows(record, path)
    if record["n"] != len(pairs) or record["fingerprint"] != pairs.fingerprint():
        return pairs, (f"{pairs.source} has no split column and is not the data {run_dir} was fitted on: the "
                       f"run's held-out split ({path.name}) does not apply")
    return pairs.with_test_pairs(test), (f"{pairs.source} has no split column: using the split {run_dir} was "
                                         f"fitted with ({len(test)} of {len(pairs)} pairs held out; {path.name})")


def _checked_test_rows(record, path: Path) -> np.ndarray:
    if not isinstance(record, dict) or record.get("format") != SPLIT_FORMAT:
        raise BadInput(f"not a run split file (expected format {SPLIT_FORMAT!r})", source=str(path))
    n, test = record.get("n"), record.get("test")
    if not isinstance(n, int) or not isinstance(record.get("fingerprint"), str) or not isinstance(test, list):
        raise BadInput("expected an integer 'n', a string 'fingerprint' and a list 'test'", source=str(path))
    rows = np.asarray(test)
    if rows.size and (rows.dtype.kind not in "iu" or rows.min() < 0 or rows.max() >= n):
        raise BadInput(f"'test' must hold row numbers in [0, {n})", source=str(path))
    return rows.astype(np.int64)
