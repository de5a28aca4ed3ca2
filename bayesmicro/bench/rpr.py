"""``rpr``: the paper's Table 3 protocol — Reasonable Preference Reversal (``microsoft/rpr``), two pairs per row with
reversed labels under the two criteria, the criterion as context and its category as the attribute; stage 1 then
stage 2 with Hedge at τ = 1e-4 and bayesmicro's posterior routing.

The engine is ``bayesmicro.bench.paper_protocol``; this module holds the dataset's settings. Real numbers need the
hub (``microsoft/rpr`` and the paper's GRM-Llama3.2-3B backbone) and a GPU; ``--data`` and ``--backbone`` take local
copies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bayesmicro.bench.paper_protocol import BUDGETS, PAPER_BACKBONE, ProtocolSuite, run_protocol

SUITE = ProtocolSuite(
    name="rpr", protocol="rpr", tau=1e-4, table="RPR (the paper's Table 3 layout)",
    paper={"single_bt": 0.6594, "static_mixture": 0.7836, "hedge": 0.8218, "hyre": 0.8974},
    paper_note=" (its 'MiCRo' beside MiCRo + Hedge, the two-stage method; its 'MiCRo + HyRe' beside ours)",
    unit="criterion category", units="criterion categories")


def run(seeds: int = 1, out_dir: Path | str = "benchmarks/results/rpr", *, data: str | None = None,
        backbone: str | None = PAPER_BACKBONE, device: str = "auto", k: int = 10,
        budgets: tuple[int, ...] = BUDGETS, **kw: Any) -> dict[str, Any]:
    """``bayesmicro bench rpr``: see ``bayesmicro.bench.paper_protocol.run_protocol`` for ``kw``."""
    return run_protocol(SUITE, seeds, out_dir, data=data, backbone=backbone, device=device, k=k, budgets=budgets,
                        **kw)
