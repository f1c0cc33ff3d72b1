"""Data-parallel training under `torchrun`: the process group, and the few collectives a step
and an evaluation need.

Every process draws the same global batch (the sampler is seeded alike) and trains on its own
share of its rows; per-task losses, label counts and gradients are summed across processes so
that every process applies the update one process would compute on the whole batch. Only the
main process (rank 0) writes run files, logs and shows progress.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from polytask._launch import launched_rank, launched_world_size

log = logging.getLogger("polytask")

BACKENDS = ("auto", "gloo", "nccl")


class ProcessFailed(RuntimeError):
    """Another process of a distributed run stopped (or the group broke) mid-training."""


def peer_failure(err: BaseException) -> bool:
    """Whether `err` is a collective failing because another process is gone."""
    known = tuple(c for c in (getattr(dist, "DistError", None),) if isinstance(c, type))
    text = str(err)
    return isinstance(err, known) or any(w in text for w in ("[gloo]", "NCCL", "Connection"))


def is_main_process() -> bool:
    """Whether this process writes run files and prints: rank 0, or not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return launched_rank() == 0


@dataclass(frozen=True)
class Processes:
    """This process's place in the process group, and the collectives over it."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum_(self, tensor: Tensor) -> Tensor:
        """Sum `tensor` over the processes, in place; returns it."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_all_(self, tensors: Sequence[Tensor]) -> None:
        """Sum several tensors over the processes in one collective (a flat buffer per dtype
        and device), in place."""
        groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
        for t in tensors:
            groups.setdefault((t.dtype, t.device), []).append(t)
        for same in groups.values():
            flat = torch.cat([t.reshape(-1) for t in same])
            self.sum_(flat)
            for t, part in zip(same, flat.split([t.numel() for t in same]), strict=True):
                t.copy_(part.view_as(t))

    def broadcast_(self, tensors: Sequence[Tensor]) -> None:
        """Make every process hold rank 0's values of `tensors` (in place)."""
        for t in tensors:
            dist.broadcast(t, src=0)

    def gather(self, value: object) -> list[object]:
        """Every process's `value`, in rank order, on every process."""
        out: list[object] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        dist.barrier()

    def from_main(self, value: object) -> object:
        """Rank 0's `value` on every process (a decision only the main process can take)."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def share(self, rows: Tensor) -> Tensor:
        """This process's share of a global batch's row indices (contiguous, near-equal)."""
        return rows.tensor_split(self.world_size)[self.rank]


def join_processes(backend: str, timeout_s: float, device: torch.device) -> Processes | None:
    """Join the process group the launcher set up (WORLD_SIZE > 1), initialising it once per
    process; None when this is a single-process run."""
    world = launched_world_size()
    if world <= 1:
        if backend == "nccl" and device.type != "cuda":  # unused here; refused under torchrun
            log.warning(
                "training.dist_backend nccl needs CUDA GPUs; this one-process run on %s does "
                "not use it, but under torchrun it would be refused: use gloo (or auto)",
                device.type,
            )
        return None
    if not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE={world} asks for distributed training, but this PyTorch build has no "
            "torch.distributed"
        )
    if backend not in BACKENDS:
        raise ValueError(f"distributed backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and (device.type != "cuda" or not dist.is_nccl_available()):
        raise ValueError(
            "training.dist_backend nccl needs CUDA GPUs (training.device cuda) and a CUDA build "
            f"of PyTorch; this run is on {device.type}: use gloo (or auto)"
        )
    if not dist.is_initialized():
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT", "RANK") if v not in os.environ]
        if missing:
            raise RuntimeError(
                f"WORLD_SIZE={world} but {', '.join(missing)} not set: start distributed runs "
                "with torchrun (e.g. torchrun --nproc-per-node 2 -m polytask train CONFIG)"
            )
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        log.info("joined the process group: rank %d of %d (%s)", dist.get_rank(), world, backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return Processes(dist.get_rank(), dist.get_world_size(), local)


def process_device(device: torch.device, processes: Processes | None) -> torch.device:
    """One GPU per process: `cuda` without an index becomes cuda:LOCAL_RANK."""
    if processes is None or device.type != "cuda" or device.index is not None:
        return device
    torch.cuda.set_device(processes.local_rank)
    return torch.device("cuda", processes.local_rank)
