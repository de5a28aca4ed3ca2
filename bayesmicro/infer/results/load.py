"""``bayesmicro.load(run_dir)``: rebuild the typed result of any saved run from its ``config.json`` format."""

from __future__ import annotations

import os
from pathlib import Path

from bayesmicro._io import read_json
from bayesmicro.errors import BadInput
from bayesmicro.infer.results.base import Posterior
from bayesmicro.infer.results.latent_class import LATENT_CLASS_FORMAT, LatentClassResult
from bayesmicro.infer.results.mixture import CONFIG_FILE, Fit


def load(path: str | os.PathLike) -> Posterior:
    """A ``Fit`` (``bayesmicro fit --out``) or a ``LatentClassResult`` (``bayesmicro fit --format comparisons
    --out``); a missing or damaged folder is a one-line BadInput."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput("not a run folder (expected the --out folder of `bayesmicro fit`)", source=str(path))
    if not (path / CONFIG_FILE).is_file() and (path / "metrics.json").is_file():
        raise BadInput(f"no '{CONFIG_FILE}': a latent-class run written before runs could be loaded; refit it with "
                       "`bayesmicro fit --format comparisons --out`", source=str(path))
    raw = read_json(path / CONFIG_FILE)
    if isinstance(raw, dict) and raw.get("format") == LATENT_CLASS_FORMAT:
        return LatentClassResult.load(path)
    return Fit.load(path)
