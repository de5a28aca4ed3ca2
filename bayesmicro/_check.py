"""Argument checks at the edge, the same for the Python API and the CLI: each failure is a ``BadInput`` whose
message starts with the argument's name (the CLI swaps it for the option, ``seed`` → ``--seed``)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from bayesmicro.errors import BadInput

SEED_MAX = 2**32 - 1  # numpy's and torch's generators take seeds in [0, 2^32)


def _bad(name: str, expected: str, value: Any) -> BadInput:
    return BadInput(f"{name} must be {expected}, got {value!r}", argument=name)


def integer(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int (bools, floats and text refused) within [minimum, maximum]."""
    if minimum is not None and maximum is not None:
        expected = f"an integer in [{minimum}, {maximum}]"
    elif minimum is not None:
        expected = f"an integer ≥ {minimum}"
    else:
        expected = "an integer"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _bad(name, expected, value)
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _bad(name, expected, value)
    return value


def seed(value: Any, name: str = "seed") -> int:
    return integer(value, name, 0, SEED_MAX)


def number(value: Any, name: str, minimum: float | None = None, maximum: float | None = None, *,
           low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float (nan and ±inf refused) within the given bounds."""
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if low_open else '≥'} {minimum:g}")
    if maximum is not None:
        parts.append(f"{'<' if high_open else '≤'} {maximum:g}")
    expected = "a finite number" + (f" {' and '.join(parts)}" if parts else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _bad(name, expected, value)
    value = float(value)
    if not math.isfinite(value):
        raise BadInput(f"{name} must be {expected}, got {value}", argument=name)
    if minimum is not None and (value < minimum or (low_open and value == minimum)):
        raise BadInput(f"{name} must be {expected}, got {value:g}", argument=name)
    if maximum is not None and (value > maximum or (high_open and value == maximum)):
        raise BadInput(f"{name} must be {expected}, got {value:g}", argument=name)
    return value


def choice(value: Any, name: str, options: Iterable[str]) -> str:
    options = tuple(options)
    if not isinstance(value, str) or value not in options:
        raise _bad(name, f"one of {', '.join(options)}", value)
    return value


def numbers_list(text: str, name: str) -> list[float]:
    """'0.1,0.5' → [0.1, 0.5]; every item a finite number."""
    values = []
    for item in str(text).split(","):
        if not item.strip():
            continue
        try:
            value = float(item)
        except ValueError:
            raise BadInput(f"{name} expects comma-separated numbers, got {text!r}", argument=name) from None
        if not math.isfinite(value):
            raise BadInput(f"{name} expects comma-separated finite numbers, got {text!r}", argument=name)
        values.append(value)
    return values


def integers_list(text: str, name: str, minimum: int = 1) -> list[int]:
    """'10,25' → [10, 25]; every item an integer ≥ ``minimum``, at least one item."""
    try:
        values = [int(item) for item in str(text).split(",") if item.strip()]
    except ValueError:
        values = []
    if not values or min(values) < minimum:
        raise BadInput(f"{name} must be comma-separated integers ≥ {minimum} (e.g. 10,25,50), got {text!r}",
                       argument=name)
    return values
