"""Streaming MAP fit over a memory-mapped shard store: data larger than memory, CPU or one GPU, resumable.

Minibatches are contiguous blocks of rows (the store is written in shuffled order); the block order of every epoch
is a permutation drawn from the seed and the epoch number alone, so a run that restarts from a checkpoint visits the
same batches in the same order as one that never stopped. The likelihood of a batch of B pairs is scaled to the N
pairs of the store by the model's ``pyro.plate("pairs", N, subsample=...)``. AdamW with linear warmup and cosine decay
(the paper's stage-1 recipe); the learning rate is a pure function of the step, so resuming needs no scheduler state.

Checkpoints (every ``checkpoint_every`` steps and at the end) are folders ``step-<8-digit step>`` holding
``state.safetensors`` (parameters, AdamW moments, torch RNG) and ``state.json`` (position, optimizer settings, what
was fitted), written atomically; ``latest.json`` names the newest and is replaced last, so a SIGKILL at any moment
leaves a readable checkpoint behind.
"""

from __future__ import annotations

import math
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDelta
from pyro.infer.autoguide.initialization import init_to_value
from torch.utils.data import DataLoader, Dataset

from bayesmicro._io import MARKER, atomic_dir, read_json, read_tensors, write_json, write_tensors
from bayesmicro.data.shards import Block, ShardStore
from bayesmicro.errors import BadInput
from bayesmicro.infer.results.mixture import Fit, FitConfig
from bayesmicro.methods import Router as RouterKind
from bayesmicro.models.mixture import LABEL_ROUTERS, MIN_INPUT_SCALE, ROUTERS

LATEST_FILE, STATE_TENSORS, STATE_JSON = "latest.json", "state.safetensors", "state.json"
CHECKPOINT_FORMAT = "bayesmicro.stream_checkpoint/1"
ROUTER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class StreamSchedule:
    """Minibatch AdamW over the store: ``epochs`` passes of ``batch_size``-row blocks, warmup then cosine decay."""

    epochs: int = 1
    batch_size: int = 8192
    lr: float = 2e-3
    warmup: float = 0.05
    checkpoint_every: int = 0  # steps between checkpoints; 0: only at the end (when a checkpoint folder is given)
    num_workers: int = 0  # DataLoader worker processes reading shards while the main process computes
    router_dtype: str = "float32"  # "bfloat16": the router's first layer (the bulk of the FLOPs) in bf16 matmuls
    prefetch: int = 1  # blocks a reader thread reads ahead (page faults and copies overlap compute); 0: none

    def identity(self) -> dict[str, Any]:
        """The fields that change the result (a checkpoint only resumes a fit with the same ones)."""
        return {k: v for k, v in asdict(self).items() if k not in ("checkpoint_every", "num_workers", "prefetch")}

    def check(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise BadInput(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if (self.lr <= 0 or not 0 <= self.warmup < 1 or self.checkpoint_every < 0 or self.num_workers < 0
                or self.prefetch < 0):
            raise BadInput(f"invalid schedule {self}")
        if self.router_dtype not in ROUTER_DTYPES:
            raise BadInput(f"router_dtype must be one of {list(ROUTER_DTYPES)}, got {self.router_dtype!r}")

    def lr_at(self, step: int, total: int) -> float:
        """Learning rate of step ``step`` (0-based) of ``total``."""
        warm = max(1, int(self.warmup * total))
        if step < warm:
            return self.lr * (step + 1) / warm
        return self.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


class _BlockDataset(Dataset):
    """Item i: the rows of block i as stored (fp16), read from the memory-mapped shard."""

    def __init__(self, store: ShardStore, blocks: list[Block], keys: tuple[str, ...]):
        self.store, self.blocks, self.keys = store, blocks, keys

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.store.read(self.blocks[i], self.keys)


def prefetched(batches: Iterable[dict[str, torch.Tensor]], depth: int, copy: bool
               ) -> Iterator[dict[str, torch.Tensor]]:
    """Iterate ``batches`` in a reader thread running ``depth`` batches ahead. With ``copy`` every block is copied
    into one of ``depth + 2`` reused buffers, so the thread (not the compute) pays for the memory-mapped page
    faults. torch releases the GIL inside copies, so reading overlaps the optimiser step."""
    if depth == 0:
        yield from batches
        return
    ring: list[dict[str, torch.Tensor]] = [{} for _ in range(depth + 2)]
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def fill(slot: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in batch.items():
            buf = slot.get(key)
            if buf is None or buf.shape[0] < value.shape[0] or buf.shape[1:] != value.shape[1:]:
                buf = slot[key] = torch.empty_like(value, memory_format=torch.contiguous_format)
            out[key] = buf[:value.shape[0]].copy_(value)
        return out

    def reader() -> None:
        try:
            for i, batch in enumerate(batches):
                item = fill(ring[i % len(ring)], batch) if copy else batch
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(done)
        except BaseException as exc:  # re-raised in the consumer
            slots.put(exc)

    thread = threading.Thread(target=reader, name="bayesmicro-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def epoch_order(n_blocks: int, seed: int, epoch: int) -> list[int]:
    """The block order of ``epoch``: depends on (seed, epoch) only."""
    gen = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_blocks, generator=gen, device="cpu").tolist()


class Staging:
    """Turns a stored fp16 block into float32 model inputs on the device.

    On the CPU it converts into buffers kept from batch to batch: a fresh (B, d) float32 tensor per batch costs a
    page fault per 4 KiB on first touch, which on a small VM costs more than the conversion itself.
    """

    def __init__(self, device: torch.device, use_router: bool, use_context: bool,
                 router_dtype: torch.dtype = torch.float32):
        self.device, self.use_router, self.use_context = device, use_router, use_context
        self.router_dtype = router_dtype
        self.buffers: dict[str, torch.Tensor] = {}

    def _buffer(self, name: str, rows: int, cols: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        buf = self.buffers.get(name)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != cols or buf.dtype != dtype:
            buf = self.buffers[name] = torch.empty(rows, cols, dtype=dtype, device="cpu")
        return buf[:rows]

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(diff (B, d) float32, router input (B, d_r) in the router dtype or None) on the device."""
        parts = [batch["prompt"]] + ([batch["context"]] if self.use_context else []) if self.use_router else []
        if self.device.type != "cpu":
            diff = batch["chosen"].to(self.device, non_blocking=True).float()
            diff.sub_(batch["rejected"].to(self.device, non_blocking=True).float())
            if not parts:
                return diff, None
            router_x = torch.cat([p.to(self.device, non_blocking=True).to(self.router_dtype) for p in parts], dim=1)
            return diff, router_x
        rows, dim = batch["chosen"].shape
        diff = self._buffer("diff", rows, dim).copy_(batch["chosen"])
        diff.sub_(self._buffer("rejected", rows, dim).copy_(batch["rejected"]))
        if not parts:
            return diff, None
        router_x = self._buffer("router", rows, sum(p.shape[1] for p in parts), self.router_dtype)
        col = 0
        for p in parts:
            router_x[:, col:col + p.shape[1]].copy_(p)
            col += p.shape[1]
        return diff, router_x


def read_pass_seconds(store: ShardStore, batch_size: int, router: bool = True) -> float:
    """Seconds for one sequential read of every block (the bytes the fit reads): the floor of an epoch."""
    keys = ("chosen", "rejected") + (("prompt",) + (("context",) if store.has_context else ()) if router else ())
    start = time.perf_counter()
    for batch in store.iter_blocks(batch_size, keys):
        for value in batch.values():
            value.clone()  # touch every byte: a mapped slice is read only when used
    return time.perf_counter() - start


def fit_stream(
    store: ShardStore | str | os.PathLike,
    k: int = 3,
    router: str = "prompt",
    *,
    alpha: float = 0.5,
    prior_scale: float = 1.0,
    router_prior_scale: float = 0.3,
    hidden: int = 128,
    seed: int = 0,
    schedule: StreamSchedule | None = None,
    device: str | torch.device = "cpu",
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> Fit:
    """MAP fit of a ``k``-head mixture streamed from a shard store; returns the usual ``Fit`` (on the CPU).

    ``router``: none / prompt / context (as ``bayesmicro.fit``); ``router_prior_scale``: sd of the Gaussian prior on
    the router network's weights. Every pair in the store is fitted (write held-out pairs elsewhere). ``device``:
    ``cpu`` or ``cuda[:i]`` — parameters, Pyro sites and batches live there. ``checkpoint_dir``: where checkpoints
    go; with ``resume`` a run continues from the newest one there. ``on_step(step, loss)`` is called after every
    optimiser step. The run records the store's embedding settings (``meta['embedding']``) like ``fit`` does.
    """
    store = store if isinstance(store, ShardStore) else ShardStore(store)
    schedule = schedule or StreamSchedule()
    schedule.check()
    if not (str(device) == "cpu" or str(device).startswith("cuda")):
        raise BadInput(f"--device must be cpu or cuda[:i], got {str(device)!r}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: CUDA is not available on this machine")
    config = _config(store, k, router, alpha, prior_scale, router_prior_scale, hidden, seed)
    use_router = config.router != RouterKind.NONE
    keys = ("chosen", "rejected") + (("prompt",) + (("context",) if config.uses_context else ()) if use_router else ())
    blocks = store.blocks(schedule.batch_size)
    steps_per_epoch, n = len(blocks), len(store)
    total = schedule.epochs * steps_per_epoch
    identity = {"config": asdict(config), "schedule": schedule.identity(), "n": n,
                "shards": [s["sha256"] for s in store.shards]}

    pyro.set_rng_seed(seed)
    with torch.device(device):
        model, elbo, opt = _build(store, config, seed, schedule, device)
    position = {"step": 0, "epoch": 0, "batch": 0, "epoch_loss": 0.0}
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None and resume:
        position = _load_checkpoint(ckpt, identity, elbo, opt, device) or position

    dataset = _BlockDataset(store, blocks, keys)
    staging = Staging(device, use_router, config.uses_context, ROUTER_DTYPES[schedule.router_dtype])
    start_time, start_step = time.perf_counter(), position["step"]
    with torch.device(device):
        while position["epoch"] < schedule.epochs:
            order = epoch_order(steps_per_epoch, seed, position["epoch"])[position["batch"]:]
            loader = DataLoader(dataset, batch_size=None, sampler=order, num_workers=schedule.num_workers,
                                pin_memory=device.type == "cuda")
            for batch in prefetched(loader, schedule.prefetch, copy=device.type == "cpu"):
                diff, router_x = staging(batch)
                for group in opt.param_groups:
                    group["lr"] = schedule.lr_at(position["step"], total)
                opt.zero_grad(set_to_none=True)
                loss = elbo(diff, router_x, size=n) / n
                loss.backward()
                opt.step()
                value = float(loss.detach())
                position["epoch_loss"] += value * diff.shape[0] / n
                position["step"] += 1
                position["batch"] += 1
                if ckpt is not None and schedule.checkpoint_every and position["step"] % schedule.checkpoint_every == 0:
                    _save_checkpoint(ckpt, identity, position, elbo, opt)
                if on_step:
                    on_step(position["step"], value)
            position["epoch"] += 1
            position["batch"] = 0
            if position["epoch"] < schedule.epochs:
                position["epoch_loss"] = 0.0
    seconds = time.perf_counter() - start_time
    if ckpt is not None:
        _save_checkpoint(ckpt, identity, position, elbo, opt)

    heads = elbo.guide.median()["heads"].detach().to("cpu").clone()
    router_state = {name: v.detach().to("cpu").clone() for name, v in model.router.state_dict().items()}
    steps_run = position["step"] - start_step
    embedding = {"embedding": store.meta["embedding"]} if store.meta.get("embedding") else {}
    return Fit(config, heads.unsqueeze(0), router_state, summary={**embedding,
        "train_pairs": n, "steps": position["step"], "epochs": schedule.epochs, "batch_size": schedule.batch_size,
        "loss_per_pair": position["epoch_loss"], "fit_seconds": seconds, "device": str(device),
        "pairs_per_second": steps_run * n / steps_per_epoch / seconds if seconds > 0 and steps_run else None,
        "resumed_from_step": start_step,
    })


def _config(store: ShardStore, k, router, alpha, prior_scale, router_prior_scale, hidden, seed) -> FitConfig:
    if router not in ROUTERS:
        raise BadInput(f"router must be one of {ROUTERS}, got {router!r}")
    if router in LABEL_ROUTERS:
        raise BadInput(f"router {router!r} reads labels, which a shard store does not keep: fit in memory (fit())")
    if k < 1:
        raise BadInput(f"k must be ≥ 1, got {k}")
    for name, value in (("prior_scale", prior_scale), ("router_prior_scale", router_prior_scale)):
        if not (math.isfinite(value) and value > 0):
            raise BadInput(f"{name} must be a finite number > 0, got {value}")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise BadInput(f"alpha must be a finite number ≥ 0, got {alpha}")
    if router == RouterKind.CONTEXT and not store.has_context:
        raise BadInput("router 'context' needs a 'context' feature matrix, and this store has none",
                       source=str(store.path))
    router = router if k > 1 else "none"
    router_dim = 0 if router == RouterKind.NONE else store.prompt_dim + (store.context_dim if router == RouterKind.CONTEXT else 0)
    return FitConfig(k=k, router=router, dim=store.dim, router_dim=router_dim, hidden=hidden,
                     prior_scale=prior_scale, alpha=alpha, router_prior_scale=router_prior_scale, inference="map",
                     seed=seed)


def _build(store: ShardStore, config: FitConfig, seed: int, schedule: StreamSchedule, device: torch.device):
    """Model (router standardised from the store's statistics), AutoDelta guide, ELBO module and AdamW."""
    with torch.device("cpu"):  # the same initial values on every device
        torch.manual_seed(seed)  # router initialisation
        model = config.build_model()
    stats = store.stats()
    if model.router.reads_input:
        mean = [stats["prompt_mean"]] + ([stats["context_mean"]] if config.uses_context else [])
        std = [stats["prompt_std"]] + ([stats["context_std"]] if config.uses_context else [])
        model.router.input_mean.copy_(torch.cat(mean))
        model.router.input_scale.copy_(torch.cat(std).clamp_min(MIN_INPUT_SCALE))
    model.to(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    scale = 0.5 / max(float(stats["diff_rms"]), 1e-8)  # a Python float: stats may live on the default (CUDA) device
    heads = torch.randn(config.k, config.dim, generator=gen, device="cpu") * scale
    guide = AutoDelta(model, init_loc_fn=init_to_value(values={"heads": heads.to(device)}))
    elbo = Trace_ELBO()(model, guide)
    router_x = torch.zeros(2, config.router_dim) if model.router.reads_input else None
    elbo(torch.zeros(2, config.dim), router_x, size=len(store))  # materialise the guide's parameters
    opt = torch.optim.AdamW([p for p in elbo.parameters() if p.requires_grad], lr=schedule.lr, weight_decay=0.0)
    return model, elbo, opt


# -- checkpoints --------------------------------------------------------------------------------------------------
def _save_checkpoint(folder: Path, identity: dict, position: dict, elbo, opt: torch.optim.Optimizer) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{position['step']:08d}"
    state = opt.state_dict()
    tensors = {f"param.{key}": v for key, v in elbo.state_dict().items()}
    for index, slots in state["state"].items():
        tensors.update({f"optim.{index}.{slot}": v for slot, v in slots.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    if not (folder / name).exists():  # the state at a given step is always the same: never rewrite it
        with atomic_dir(folder / name, "checkpoint") as tmp:
            write_tensors(tmp / STATE_TENSORS, tensors)
            write_json(tmp / STATE_JSON, {"format": CHECKPOINT_FORMAT, "identity": identity, "position": position,
                                          "param_groups": state["param_groups"]})
    write_json(folder / LATEST_FILE, {"checkpoint": name})
    for old in folder.glob("step-*"):  # older checkpoints are superseded once latest.json names the new one
        if old.name != name and (old / MARKER).is_file():  # only what this library wrote
            shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(folder: Path, identity: dict, elbo, opt: torch.optim.Optimizer,
                     device: torch.device) -> dict[str, Any] | None:
    if not (folder / LATEST_FILE).exists():
        return None
    path = folder / read_json(folder / LATEST_FILE)["checkpoint"]
    saved = read_json(path / STATE_JSON)
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise BadInput(f"'{STATE_JSON}' is not a streaming-fit checkpoint ({CHECKPOINT_FORMAT})", source=str(path))
    if saved["identity"] != identity:
        differs = sorted(key for key in identity if saved["identity"].get(key) != identity[key])
        raise BadInput(f"the checkpoint belongs to a different fit ({', '.join(differs)} differ); "
                       "use a fresh checkpoint folder or resume=False", source=str(path))
    tensors = read_tensors(path / STATE_TENSORS)
    elbo.load_state_dict({key.removeprefix("param."): v.to(device) for key, v in tensors.items()
                          if key.startswith("param.")})
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, index, slot = key.split(".", 2)
            slots.setdefault(int(index), {})[slot] = v if slot == "step" else v.to(device)
    opt.load_state_dict({"state": slots, "param_groups": saved["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    return saved["position"]
