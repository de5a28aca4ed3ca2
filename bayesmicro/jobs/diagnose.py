"""The ``diagnose`` job (``bayesmicro diagnose``, ``bayesmicro.run(DiagnoseConfig(...))``): ArviZ summary, PSIS-LOO
with Pareto-k counts, calibration and a reliability plot written into the run folder."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from bayesmicro.config import DiagnoseConfig
from bayesmicro.errors import BadInput
from bayesmicro.jobs._common import pairs_for_run, stderr
from bayesmicro.methods import Inference

PLOT_FILE, REPORT_FILE = "reliability.png", "diagnose.json"


def run_diagnose(job: DiagnoseConfig) -> dict:
    """LOO on the training pairs, calibration on the held-out ones, the plot; written into RUN_DIR and returned."""
    from bayesmicro._io import add_to_marker, write_json
    from bayesmicro.evaluate.arviz import to_inference_data
    from bayesmicro.evaluate.loo import reloo
    from bayesmicro.evaluate.selection import head_correlation
    from bayesmicro.evaluate.calibration import calibration_report, reliability_plot
    from bayesmicro.infer.results.mixture import Fit

    run_dir, data = Path(job.run), None if job.data is None else Path(job.data)
    max_refits, redraw_factor = job.max_refits, job.redraw_factor
    fitted = Fit.load(run_dir)
    _check_writable(run_dir)
    if max_refits is None:
        max_refits = 0 if Inference(fitted.config.inference) is Inference.NUTS else 10  # NUTS refits cost minutes
    pairs, truth = _pairs_for(run_dir, data, fitted)
    fitted.check_compatible(pairs)
    has_split = pairs.split is not None and "test" in set(pairs.split.tolist())
    train = pairs.part("train") if has_split else pairs
    test = pairs.part("test") if has_split else pairs
    report: dict = {"run": str(run_dir), "inference": fitted.config.inference, "k": fitted.config.k,
                    "router": fitted.config.router, "evaluated_on": "test" if has_split else "all"}
    # the pointwise log-likelihood of every draw, computed once; a point estimate has no posterior to summarise
    idata = to_inference_data(fitted, train) if fitted.n_draws > 1 else None
    report["posterior"] = _posterior_summary(fitted, idata)
    report["loo"] = (reloo(fitted, train, max_refits=max_refits, redraw_factor=redraw_factor, idata=idata)
                     if idata is not None else None)
    true_prob = truth.prob(test) if truth is not None else None
    draws = fitted.pointwise_log_lik(test).exp()
    report["calibration"] = calibration_report(draws, test.group, true_prob)
    report["head_correlation"] = head_correlation(fitted, test).tolist()
    plot = reliability_plot(draws.mean(0), run_dir / PLOT_FILE, test.group,
                            title=f"{run_dir.name}: held-out reliability")
    report["reliability_plot"] = str(plot)
    write_json(run_dir / REPORT_FILE, report)
    add_to_marker(run_dir, PLOT_FILE, REPORT_FILE)  # the run folder may still be replaced with `fit --overwrite`
    _print_report(report, plot)
    return report


def _check_writable(run_dir: Path) -> None:
    """PLOT_FILE and REPORT_FILE are written into RUN_DIR: found out now, not after the LOO refits."""
    for name in (PLOT_FILE, REPORT_FILE):
        target = run_dir / name
        if (target.exists() and not target.is_file()) or not os.access(run_dir, os.W_OK | os.X_OK):
            raise BadInput(f"cannot write {name} into the run folder (no write permission, or not a file)",
                           source=str(run_dir))


def _print_report(report: dict, plot) -> None:
    cal = report["calibration"]
    if (posterior_line := _posterior_line(report["posterior"])) is not None:
        stderr.print(posterior_line)
    stderr.print(_loo_line(report["loo"]))
    stderr.print(f"held-out ECE {cal['ece']:.4f}, Brier {cal['brier']:.4f}, NLL {cal['nll']:.4f}"
                 + (f", 90% coverage {cal['coverage']:.3f}" if "coverage" in cal else ""))
    stderr.print(f"reliability plot: {plot}")


def _pairs_for(run_dir: Path, data: Path | None, fitted):
    """The run's pairs: DATA, or the built-in population recorded in the run's metrics.json (with its truth)."""
    from bayesmicro._io import read_json

    if data is not None:
        return pairs_for_run(run_dir, data, fitted)[0], None
    metrics = run_dir / "metrics.json"
    population = read_json(metrics).get("population") if metrics.exists() else None
    if not population:
        raise BadInput("give DATA: the run was not fitted on the built-in population", source=str(run_dir))
    from bayesmicro.data.synthetic import make_population

    pairs, truth = make_population(seed=int(population["seed"]))
    return pairs, truth


def _posterior_summary(fitted, idata) -> dict:
    """Head norms and sds, ArviZ's smallest bulk ESS over the head weights (None for a point estimate) and, for draws
    from several chains (NUTS, the refined VI), its largest rank-normalised R̂ over them (else None)."""
    import numpy as np

    from bayesmicro.evaluate.arviz import n_chains

    sd = fitted.heads.std(0) if fitted.n_draws > 1 else fitted.heads[0] * 0
    chains = n_chains(fitted)
    summary = {"draws": fitted.n_draws, "chains": chains, "heads_mean_norm": fitted.heads.mean(0).norm(dim=-1).tolist(),
               "heads_mean_sd": sd.mean(-1).tolist(), "min_ess_bulk": None, "max_rhat": None,
               "parameters": fitted.config.k * fitted.config.dim}
    if idata is None:
        return summary
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        # az.ess, not az.summary: the summary's R-hat needs two chains and logs a warning on VI's one
        ess = np.asarray(az.ess(idata, var_names=["heads"], method="bulk")["heads"], dtype=float)
        rhat = np.asarray(az.rhat(idata, var_names=["heads"])["heads"], dtype=float) if chains > 1 else None
    return {**summary, "min_ess_bulk": _finite_extreme(ess, np.min),
            "max_rhat": None if rhat is None else _finite_extreme(rhat, np.max)}


def _finite_extreme(values, extreme) -> float | None:
    import numpy as np

    finite = values[np.isfinite(values)]
    return float(extreme(finite)) if finite.size else None


def _posterior_line(posterior: dict) -> str | None:
    if posterior["min_ess_bulk"] is None:
        return None
    line = f"posterior: {posterior['draws']:,} draws"
    if posterior["max_rhat"] is not None:
        line += f" in {posterior['chains']} chains, largest head R-hat {posterior['max_rhat']:.3f}"
    return f"{line}, smallest head bulk ESS {posterior['min_ess_bulk']:.0f}"


def _loo_line(loo: dict | None) -> str:
    if loo is None:
        return "LOO: needs posterior draws (fit with --inference vi or nuts)"
    line = (f"LOO elpd {loo['elpd_loo']:.1f} ± {loo['se']:.1f}, p_loo {loo['p_loo']:.1f}, "
            f"Pareto k > 0.7: {loo['pareto_k']['bad']} of {loo['n']}")
    if not loo["pareto_k"]["bad"]:
        return line
    line += " at the run's draws"
    redraw, mixture = loo.get("redraw"), loo.get("mixture_is")
    steps = []
    if redraw:
        steps.append(f"PSIS redone on {redraw['draws']:,} draws: {redraw['still_above']} still above")
    if mixture:
        steps.append(f"mixture IS on {mixture['draws']:,} draws of the leave-one-out mixture: "
                     f"{mixture['still_above']} still above")
    steps.append(f"{len(loo['reloo']['refitted'])} refitted and scored exactly, {loo['reloo']['unreliable']} left "
                 f"above {loo['reloo']['threshold']}")
    return f"{line} ({'; '.join(steps)})"
