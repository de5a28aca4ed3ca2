"""Multi-process extraction on ``torch.distributed`` (gloo on CPU, nccl on GPUs; launch with ``torchrun``)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_from_env(device: str = "auto") -> bool:
    """Join the process group ``torchrun`` describes in the environment (WORLD_SIZE > 1); False when alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return is_distributed()
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return True


def local_device(device: torch.device) -> torch.device:
    """Each rank on its own GPU (``LOCAL_RANK``) when running distributed on CUDA."""
    if is_distributed() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank() % torch.cuda.device_count())))
    return device


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def gather_rows(rows: torch.Tensor | None, capacity: int, dim: int) -> list[torch.Tensor]:
    """All-gather one (b_r, dim) block per rank (b_r ≤ capacity, None = empty) → list indexed by rank, float32 CPU.

    Blocks travel as fixed-size float32 tensors (lossless for fp16/bf16/fp32 values), no pickling.
    """
    device = _comm_device()
    block = torch.zeros(capacity, dim, dtype=torch.float32, device=device)
    count = torch.zeros(1, dtype=torch.long, device=device)
    if rows is not None:
        block[: rows.shape[0]] = rows.to(device, torch.float32)
        count[0] = rows.shape[0]
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    blocks = [torch.empty_like(block) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    dist.all_gather(blocks, block)
    return [b[: int(c)].cpu() for b, c in zip(blocks, counts)]


def sum_int(value: int) -> int:
    """Sum of an integer over the ranks (the value itself when alone)."""
    if not is_distributed():
        return value
    total = torch.tensor([value], dtype=torch.long, device=_comm_device())
    dist.all_reduce(total)
    return int(total.item())


def barrier() -> None:
    if is_distributed():
        dist.barrier()
