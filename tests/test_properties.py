"""Property tests (hypothesis) on the readers and the math core.

Readers: random column sets and random values written as jsonl / csv / jsonl.gz give either a valid
``PreferencePairs`` or ``BadInput`` — nothing else — and well-formed files are accepted with their text intact.
Math core: random tensors including extreme values give finite log-probabilities ≤ 0, probabilities in [0, 1],
responsibilities that sum to 1, and agree with a float64 reference.

The example counts are constants here; the README's reliability table quotes ``TOTAL_EXAMPLES``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import logsumexp

from bayesmicro.data.pairs import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, PreferencePairs, load_pairs
from bayesmicro.errors import BadInput
from bayesmicro.models.bt import (bt_log_prob, entropy, mixture_log_prob, mixture_prob, responsibilities,
                                  reward_margins)

READER_EXAMPLES = 100
MATH_EXAMPLES = 200
PROPERTY_TESTS = {"readers": READER_EXAMPLES, "mixture_core": MATH_EXAMPLES, "margins": MATH_EXAMPLES}
TOTAL_EXAMPLES = sum(PROPERTY_TESTS.values())

COLUMN_POOL = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS, "choosen", "Prompt", "extra")
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)
SCALAR = st.one_of(TEXT, st.integers(-2**31, 2**31), st.floats(allow_nan=False, allow_infinity=False), st.booleans())
VALUE = st.one_of(SCALAR, st.none(), st.lists(st.integers(0, 9), max_size=2))


@st.composite
def tables(draw):
    columns = draw(st.lists(st.sampled_from(COLUMN_POOL), unique=True, max_size=len(COLUMN_POOL)))
    n_rows = draw(st.integers(0, 4))
    # half the time, a well-formed table: text in the required columns, one scalar type per label column
    well_formed = draw(st.booleans())
    rows = []
    label_types = {c: draw(st.sampled_from([TEXT, st.integers(0, 999), st.booleans()])) for c in columns}
    for _ in range(n_rows):
        row = {}
        for c in columns:
            if well_formed:
                row[c] = draw(TEXT if c in REQUIRED_COLUMNS else label_types[c])
            else:
                row[c] = draw(VALUE)
        rows.append(row)
    return columns, rows, well_formed, draw(st.sampled_from(["jsonl", "csv", "jsonl.gz"]))


def _write(path: Path, columns: list[str], rows: list[dict], fmt: str) -> list[dict]:
    """Write the table; returns the rows as the file states them (CSV: every field as text)."""
    if fmt == "csv":
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(columns)
        as_text = [{c: "" if r[c] is None else str(r[c]) for c in columns} for r in rows]
        writer.writerows([[r[c] for c in columns] for r in as_text])
        path.write_bytes(buffer.getvalue().encode())
        return as_text
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if fmt.endswith(".gz") else data)
    return rows


@settings(max_examples=READER_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_readers_return_valid_pairs_or_bad_input(table):
    columns, rows, well_formed, fmt = table
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"pairs.{fmt}"
        stated = _write(path, columns, rows, fmt)
        try:
            pairs = load_pairs(path)
        except BadInput as exc:
            pairs, error = None, str(exc)
            assert "\n" not in error and str(path) in error
    has_required = set(REQUIRED_COLUMNS) <= set(columns)
    all_ties = all(r["chosen"] == r["rejected"] for r in stated) if has_required else False
    if well_formed and has_required and rows and not all_ties:
        assert pairs is not None, f"a well-formed table was refused: {error}"
    if pairs is None:
        return
    assert isinstance(pairs, PreferencePairs) and len(pairs) == len(rows)
    assert set(pairs.columns) == set(columns) & set((*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS))
    for column in pairs.columns:
        assert all(isinstance(v, str) for v in pairs[column])
    for column in REQUIRED_COLUMNS:  # the text arrives exactly as written
        assert pairs[column] == [r[column] for r in stated]


# -- math core --------------------------------------------------------------------------------------------------------
FLOATS = st.floats(-2.0**100, 2.0**100, width=32)  # ±1.3e30
LOGIT = st.one_of(FLOATS, st.just(-math.inf))


@st.composite
def mixture_inputs(draw):
    n, k = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    logits = draw(arrays(np.float32, (n, k), elements=LOGIT))
    logits[:, 0] = draw(arrays(np.float32, (n,), elements=FLOATS))  # at least one head with weight > 0
    margins = draw(arrays(np.float32, (n, k), elements=FLOATS))
    return torch.log_softmax(torch.from_numpy(logits), -1), torch.from_numpy(margins)


@settings(max_examples=MATH_EXAMPLES, deadline=None)
@given(mixture_inputs())
def test_mixture_core_is_a_probability_on_any_input(inputs):
    log_w, margins = inputs
    k = log_w.shape[-1]
    log_p = mixture_log_prob(log_w, margins)
    assert torch.isfinite(log_p).all() and bool((log_p <= 0).all())
    prob = mixture_prob(log_w, margins)
    assert bool(((prob >= 0) & (prob <= 1)).all())
    assert bool((bt_log_prob(margins) <= 0).all()) and torch.isfinite(bt_log_prob(margins)).all()
    resp = responsibilities(log_w, margins)
    assert torch.isfinite(resp).all() and bool(((resp >= 0) & (resp <= 1)).all())
    assert torch.allclose(resp.sum(-1), torch.ones(resp.shape[0]), atol=1e-5)
    h = entropy(log_w)
    assert torch.isfinite(h).all() and bool((h >= -1e-5).all()) and bool((h <= math.log(k) + 1e-4).all())
    # float64 reference: log Σ_k π_k σ(Δ_k)
    lw, m = log_w.double().numpy(), margins.double().numpy()
    reference = np.minimum(logsumexp(lw - np.logaddexp(0.0, -m), axis=-1), 0.0)
    assert np.allclose(log_p.double().numpy(), reference, rtol=1e-5, atol=1e-5)


@settings(max_examples=MATH_EXAMPLES, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 6), st.data())
def test_margins_of_extreme_features_give_finite_log_probabilities(k, d, n, data):
    bounded = st.floats(-2.0**40, 2.0**40, width=32)  # ±1.1e12
    heads = torch.from_numpy(data.draw(arrays(np.float32, (k, d), elements=bounded)))
    diff = torch.from_numpy(data.draw(arrays(np.float32, (n, d), elements=bounded)))
    margins = reward_margins(heads, diff)
    assert margins.shape == (n, k) and torch.isfinite(margins).all()
    # float32 rounding is relative to Σ|Δ_j w_j|, and products below ~1e-38 underflow to 0
    scale = float((diff.double().abs() @ heads.double().abs().T).max())
    assert torch.allclose(margins.double(), diff.double() @ heads.double().T, rtol=1e-3, atol=1e-3 * scale + 1e-37)
    log_p = mixture_log_prob(torch.full((n, k), -math.log(k)), margins)
    assert torch.isfinite(log_p).all() and bool((log_p <= 0).all())
