"""Test helpers shared across the suite."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a child Python running this checkout: the checkout first on PYTHONPATH (what was there is
    kept: dependencies may live on it), one thread."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **extra}


def assert_close(actual, expected, atol: float = 1e-6, rtol: float = 1e-6, msg: str = "") -> None:
    """Elementwise closeness for tensors, arrays and floats, with the worst offender in the message."""
    a = torch.as_tensor(np.asarray(actual, dtype=np.float64) if not torch.is_tensor(actual) else actual.detach())
    e = torch.as_tensor(np.asarray(expected, dtype=np.float64) if not torch.is_tensor(expected) else expected.detach())
    a, e = a.double(), e.double()
    assert a.shape == e.shape, f"{msg} shape {tuple(a.shape)} != {tuple(e.shape)}"
    err = (a - e).abs() - (atol + rtol * e.abs())
    if err.numel() and float(err.max()) > 0:
        i = int(err.flatten().argmax())
        raise AssertionError(f"{msg} max violation at flat index {i}: {a.flatten()[i].item()} vs "
                             f"{e.flatten()[i].item()} (atol={atol}, rtol={rtol})")


def small_pairs(n: int = 40, d: int = 5, d_p: int = 3, d_c: int | None = 2, seed: int = 0, **labels):
    from bayesmicro.data.embedded import EmbeddedPairs

    g = torch.Generator().manual_seed(seed)
    return EmbeddedPairs(
        chosen=torch.randn(n, d, generator=g), rejected=torch.randn(n, d, generator=g),
        prompt=torch.randn(n, d_p, generator=g),
        context=None if d_c is None else torch.randn(n, d_c, generator=g), **labels,
    )
