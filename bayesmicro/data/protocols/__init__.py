"""Data protocols: real loaders (hub id in each module, local-path override) that return PreferencePairs.

Add a protocol with one line in ``PROTOCOLS``: a function ``load(source=None, limit=None, **options)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from bayesmicro.data.pairs import PreferencePairs
from bayesmicro.data.protocols import chat, helpsteer2, hh_rlhf, preference700k, rpr
from bayesmicro.data.protocols.comparisons import load_comparisons
from bayesmicro.errors import BadInput

PROTOCOLS: dict[str, Callable[..., PreferencePairs]] = {
    "helpsteer2": helpsteer2.load,
    "rpr": rpr.load,
    "hh_rlhf": hh_rlhf.load,
    "preference700k": preference700k.load,
    "chat": chat.load,
}


def load_protocol(name: str, source: str | os.PathLike | None = None, limit: int | None = None,
                  **options: Any) -> PreferencePairs:
    """Pairs of protocol ``name`` from ``source`` (a local file/folder or hub id; None = the protocol's hub id)."""
    if name not in PROTOCOLS:
        raise BadInput(f"unknown protocol {name!r}; expected one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[name](source, limit=limit, **options)


# `comparisons` (classical item tables: subject, item1, item2, outcome) yields numeric per-user comparisons for the
# latent-class model, not text pairs, so it sits beside the registry rather than in it.
__all__ = ["PROTOCOLS", "load_comparisons", "load_protocol"]
