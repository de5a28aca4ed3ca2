"""``helpsteer2``: the paper's Table 2 protocol — HelpSteer2 per attribute (helpfulness, correctness, coherence,
complexity, verbosity), stage 1 then stage 2 with Hedge at τ = 1e-3 and bayesmicro's posterior routing.

The engine is ``bayesmicro.bench.paper_protocol``; this module holds the dataset's settings. Real numbers need the
hub (``nvidia/HelpSteer2`` and the paper's GRM-Llama3.2-3B backbone) and a GPU; ``--data`` and ``--backbone`` take
local copies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bayesmicro.bench.paper_protocol import BUDGETS, PAPER_BACKBONE, ProtocolSuite, run_protocol

SUITE = ProtocolSuite(
    name="helpsteer2", protocol="helpsteer2", tau=1e-3, table="HelpSteer2 (the paper's Table 2 layout)",
    paper={"single_bt": 0.7632, "static_mixture": 0.7598, "hedge": 0.7830, "hyre": 0.7883},
    paper_note=" (its 'MiCRo' beside MiCRo + Hedge, the two-stage method; its 'MiCRo + HyRe' beside ours)")


def run(seeds: int = 1, out_dir: Path | str = "benchmarks/results/helpsteer2", *, data: str | None = None,
        backbone: str | None = PAPER_BACKBONE, device: str = "auto", k: int = 10,
        budgets: tuple[int, ...] = BUDGETS, **kw: Any) -> dict[str, Any]:
    """``bayesmicro bench helpsteer2``: see ``bayesmicro.bench.paper_protocol.run_protocol`` for ``kw``."""
    return run_protocol(SUITE, seeds, out_dir, data=data, backbone=backbone, device=device, k=k, budgets=budgets,
                        **kw)
