"""``bayesmicro fit STORE``: a streamed MAP fit of a shard store (``bayesmicro.write_shards``), on the CPU or a GPU."""

from __future__ import annotations

from pathlib import Path

from bayesmicro._io import atomic_dir, write_json
from bayesmicro.cli.common import emit_json, set_threads, stderr
from bayesmicro.data.shards import MANIFEST_FILE, ShardStore
from bayesmicro.errors import BadInput
from bayesmicro.infer.stream import StreamSchedule, fit_stream


def is_shard_store(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST_FILE).is_file()


def refuse_for_a_store(*, inference: str, router_prior_scale: str, restarts: int | None, optimizer: str,
                       select_restart: str = "loglik", keep_restarts: bool = False) -> None:
    """A shard store gets one streamed AdamW MAP fit: name the option that asks for something else."""
    refused = {"--inference": inference != "map", "--router-prior-scale auto": (router_prior_scale or "").strip() == "auto",
               "--restarts": restarts is not None, "--optimizer": optimizer not in ("auto", "adam"),
               "--select-restart": select_restart != "loglik", "--keep-restarts": keep_restarts}
    for flag, given in refused.items():
        if given:
            raise BadInput(f"{flag}: a shard store gets one streamed MAP fit (AdamW over minibatches); load the "
                           "pairs in memory (an embedded-pairs folder or .npz) for this")


def fit_streamed(store_path: Path, *, k: str, router: str, alpha: float, prior_scale: float,
                 router_prior_scale: float, seed: int, schedule: dict, device: str, checkpoint_dir: Path | None,
                 out: Path | None, as_json: bool, threads: int | None, overwrite: bool = False) -> dict:
    """Minibatch AdamW over every pair of the store (``StreamSchedule`` fields in ``schedule``, defaults for those
    not given); writes a run folder like any ``fit`` and reports the MAP objective — a store has no held-out pairs."""
    try:
        k = int(k)
    except ValueError:
        raise BadInput(f"--k must be a whole number of heads for a shard store, got {k!r}") from None
    store = ShardStore(store_path)
    set_threads(threads)
    fit = fit_stream(store, k=k, router=router, alpha=alpha, prior_scale=prior_scale,
                     router_prior_scale=router_prior_scale, seed=seed, schedule=StreamSchedule(**schedule),
                     device=device, checkpoint_dir=checkpoint_dir)
    report = {"streamed": {key: fit.summary[key] for key in (
        "train_pairs", "loss_per_pair", "epochs", "batch_size", "steps", "device", "fit_seconds", "pairs_per_second",
        "resumed_from_step")}, "k": fit.config.k, "router": fit.config.router}
    if out is not None:
        report["out"] = str(out)
        with atomic_dir(out, "run", overwrite=overwrite, inputs=(store_path, checkpoint_dir)) as tmp:
            fit.write_into(tmp)
            write_json(tmp / "metrics.json", report)
    s = report["streamed"]
    rate = f", {s['pairs_per_second']:,.0f} pairs/s" if s["pairs_per_second"] else ""
    stderr.print(f"streamed {s['train_pairs']:,} pairs × {s['epochs']} epoch(s) on {s['device']} in "
                 f"{s['fit_seconds']:.1f} s{rate}; MAP objective per pair {s['loss_per_pair']:.4f}. A shard store "
                 "holds no held-out pairs: score some with `bayesmicro eval RUN DATA`")
    if as_json:
        emit_json(report)
    return report
