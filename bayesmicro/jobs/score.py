"""The ``score`` job (``bayesmicro score``, ``bayesmicro.run(ScoreConfig(...))``): posterior preference probabilities
and rewards of a saved run, one row per pair."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from bayesmicro.config import ScoreConfig
from bayesmicro.errors import BadInput
from bayesmicro.jobs._common import pairs_for_run, stderr


def run_score(job: ScoreConfig) -> dict:
    """The rows (in the report under ``rows``, or written to ``job.out`` as .parquet or .jsonl) and what they hold."""
    from bayesmicro._io import check_output
    from bayesmicro.infer.results.mixture import Fit

    run_dir, data, out = Path(job.run), Path(job.data), None if job.out is None else Path(job.out)
    if out is not None:  # before any work
        if out.suffix not in (".parquet", ".jsonl", ".json"):
            raise BadInput("--out must end in .parquet or .jsonl", source=str(out))
        check_output(out, "scores", overwrite=job.overwrite, inputs=(run_dir, data), is_file=True)
    fitted = Fit.load(run_dir)
    pairs, _ = pairs_for_run(run_dir, data, fitted)
    fitted.check_compatible(pairs)
    columns = score_rows(fitted, pairs, job.quantiles, job.level)
    if fitted.n_draws == 1:
        stderr.print(f"{run_dir} is a point estimate (one draw, inference '{fitted.config.inference}'): intervals, "
                     "sds and quantiles collapse to the mean; fit with --inference vi, em or nuts for posterior "
                     "uncertainty")
    result = {"n": len(pairs), "draws": fitted.n_draws, "level": job.level, "quantiles": list(job.quantiles)}
    if out is not None:
        _write_rows(columns, out)
        stderr.print(f"wrote {len(pairs)} rows to {out}")
        result["out"] = str(out)
    else:
        result["rows"] = [dict(zip(columns, row)) for row in zip(*columns.values())]
    return result


def score_rows(fitted, pairs, quantiles: tuple[float, ...], level: float) -> dict[str, list]:
    """Columns (each a list of n values): P(chosen ≻ rejected) mean/sd/interval/risk-averse, and the mixture (or,
    without router input, per-head) reward mean/sd/quantiles of the chosen and the rejected response."""
    proba = fitted.prefer_proba(pairs, level)
    columns: dict[str, list] = {"pair": list(range(len(pairs)))}
    for key in ("group", "user", "split"):
        if getattr(pairs, key) is not None:
            columns[key] = getattr(pairs, key).tolist()
    columns.update({"prob_mean": proba.mean.tolist(), "prob_sd": proba.sd.tolist(),
                    "prob_lower": proba.lower.tolist(), "prob_upper": proba.upper.tolist(),
                    "risk_averse": proba.risk_averse.tolist()})
    router_x = fitted.router_input(pairs)
    for side in ("chosen", "rejected"):
        rewards = fitted.reward_summary(getattr(pairs, side), router_x, quantiles)
        columns[f"{side}_reward_mean"] = rewards.mixture_mean.tolist()
        columns[f"{side}_reward_sd"] = rewards.mixture_sd.tolist()
        for q, values in zip(quantiles, rewards.mixture_quantiles):
            columns[f"{side}_reward_q{q:g}"] = values.tolist()
    return columns


def _write_rows(columns: dict[str, list], out: Path) -> None:
    from bayesmicro._io import _user_mode, write_bytes_atomic

    if out.suffix == ".parquet":
        import datasets
        from datasets import Dataset

        datasets.disable_progress_bars()  # stderr keeps our one line
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent if str(out.parent) else ".", suffix=".parquet.tmp")
        os.close(fd)
        try:
            Dataset.from_dict(columns).to_parquet(tmp)
            _user_mode(Path(tmp), directory=False)
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    elif out.suffix in (".jsonl", ".json"):
        names = list(columns)
        lines = (json.dumps(dict(zip(names, row))) for row in zip(*columns.values()))
        write_bytes_atomic(out, ("\n".join(lines) + "\n").encode())
    else:
        raise BadInput("--out must end in .parquet or .jsonl", source=str(out))
