"""Data-parallel training across processes: process group from torchrun's environment, shards, target sync.

Everything here is inert in a single process: :func:`init_from_env` returns ``None`` unless torchrun
(or the caller) set up more than one process, and the rest of the library only reaches these
helpers through that object.

How a distributed step works (``W`` processes, global batch ``B`` from the config):

* **Sharding.** Every rank draws the same epoch permutation from the engine's generator (same seed,
  same draws). Global batch ``g`` (``B`` positions, the last one maybe fewer, ``m``) is cut into ``W``
  contiguous slices of ``ceil(m / W)``; when ``W`` does not divide ``m`` the batch is padded by
  repeating its own first positions (:func:`shard_positions`). Rank ``r`` trains on slice ``r``, so
  the ranks' slices concatenated in rank order are the one-process batch.
* **Targets.** Each target bank of a rank's method (its ``target_banks``: the ELR losses) holds a
  :class:`TargetSync` that all-gathers ``(index, probs)`` from every rank and keeps the first
  occurrence of each index in rank order before the one update: every rank applies the same update, the banks stay identical,
  and a padded (repeated) example is updated once.
* **Gradients** are averaged by DistributedDataParallel; with equal slices that is the gradient of
  the mean loss over the global batch.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = ["Distributed", "TargetSync", "init_from_env", "launched_distributed", "is_main_process", "shard_positions",
           "all_gather_rows", "first_occurrences", "attach_target_sync", "broadcast_buffers"]


@dataclass(frozen=True)
class Distributed:
    """This process's place in a process group of ``world_size > 1`` ranks."""

    rank: int
    world_size: int
    local_rank: int
    owns_group: bool  # initialised here, so :meth:`close` destroys it

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run directory, logs and plots."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """``(rank, world_size)`` as the datasets' ``batches(shard=...)`` takes it."""
        return self.rank, self.world_size

    def barrier(self) -> None:
        dist.barrier()

    def broadcast_from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object; the others' arguments are ignored)."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextlib.contextmanager
    def main_holds(self, acquire: Callable[[], contextlib.AbstractContextManager[Any]]) -> Iterator[None]:
        """Rank 0 holds what ``acquire()`` gives (a run directory's lock) for every rank, while inside.

        A rank 0 that cannot take it (another process holds it, the path cannot hold a folder, ...)
        sends its error to the other ranks, which raise it too instead of waiting for rank 0 at the
        next barrier. The relayed error is the first builtin class of rank 0's, marked ``relayed``
        (rank 0 reports it; the CLI keeps the other ranks quiet).
        """
        with contextlib.ExitStack() as held:
            failure, relay = None, None
            if self.is_main:
                try:
                    held.enter_context(acquire())
                except Exception as err:  # busy, or a path that cannot hold a folder: every rank stops
                    failure, relay = err, (_builtin_name(err), str(err))
            shared = self.broadcast_from_main(relay)  # names and text only: any rank can unpickle them
            if failure is not None:
                raise failure
            if shared is not None:
                relayed = getattr(builtins, shared[0])(shared[1])
                relayed.relayed = True
                raise relayed
            yield

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """Sum of ``t`` over the ranks (a new tensor; ``t`` is unchanged)."""
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _builtin_name(err: Exception) -> str:
    """The first builtin exception class of ``err``'s that is made from a message alone."""
    for kind in type(err).__mro__:
        if kind.__module__ == "builtins" and getattr(builtins, kind.__name__, None) is kind:
            try:
                kind("")
            except TypeError:  # UnicodeEncodeError and kin need more than a message
                continue
            return kind.__name__
    return "RuntimeError"


def init_from_env(*, cuda: bool) -> Distributed | None:
    """Join the process group described by torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    Returns ``None`` in a single process (no WORLD_SIZE, or 1). A group the caller initialised is
    used as it is (and not destroyed by :meth:`Distributed.close`). Backend: NCCL with ``cuda``
    (each rank on ``cuda:LOCAL_RANK``), else gloo.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() <= 1:
            return None
        return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=False)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    log.info("rank %d of %d (backend %s)", dist.get_rank(), dist.get_world_size(), dist.get_backend())
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def launched_distributed() -> bool:
    """True in a process of a torchrun launch (WORLD_SIZE > 1) or of a process group already joined."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """False only on ranks other than 0 of a distributed run (or a torchrun launch about to become one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def shard_positions(m: int, rank: int, world_size: int) -> Tensor:
    """Positions (int64, CPU) in a global batch of ``m`` examples that rank ``rank`` trains on.

    Slice ``rank`` of ``ceil(m / W)`` positions of ``0, 1, ..., m - 1, 0, 1, ...``: contiguous, equal
    sizes on every rank, and padding repeats the batch's own first positions, so a repeated example
    sits in the same step as its original and :func:`first_occurrences` drops its second update.
    """
    per_rank = -(-m // world_size)
    return torch.arange(rank * per_rank, (rank + 1) * per_rank) % m


def all_gather_rows(index: Tensor, probs: Tensor) -> tuple[Tensor, Tensor]:
    """``(index, probs)`` of every rank concatenated in rank order; ranks may hold different row counts.

    One small all-gather of the row counts, then one of the payload: the int64 index reinterpreted
    (not converted) as ``probs.dtype`` columns beside the probabilities, so the bytes moved are
    ``rows * (8 + C * itemsize)`` per rank.
    """
    world = dist.get_world_size()
    n, classes = probs.shape
    index_cols = index.to(torch.int64).contiguous().view(probs.dtype).reshape(n, -1)
    payload = torch.cat([index_cols, probs], dim=1)
    counts = torch.tensor([n], dtype=torch.int64, device=probs.device)
    all_counts = [torch.empty_like(counts) for _ in range(world)]
    dist.all_gather(all_counts, counts)
    sizes = [int(c) for c in all_counts]
    most = max(sizes)
    if n < most:  # all_gather wants equal shapes: pad, then cut each rank's rows back out
        payload = torch.cat([payload, payload.new_zeros(most - n, payload.shape[1])])
    parts = [torch.empty_like(payload) for _ in range(world)]
    dist.all_gather(parts, payload)
    rows = torch.cat([part[:size] for part, size in zip(parts, sizes)])
    width = index_cols.shape[1]
    gathered_index = rows[:, :width].contiguous().view(torch.int64).reshape(-1)
    return gathered_index, rows[:, width:]


def first_occurrences(index: Tensor) -> Tensor:
    """Positions of the first occurrence of each value of ``index``, in increasing order (deterministic)."""
    order = torch.sort(index, stable=True).indices
    ordered = index[order]
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return order[first].sort().values


class TargetSync:
    """Set as ``ELRLoss.target_sync``: turns this rank's ``(index, probs)`` into every rank's, de-duplicated."""

    def __call__(self, index: Tensor, probs: Tensor) -> tuple[Tensor, Tensor]:
        probs = probs.detach()
        probs = probs if probs.dtype == torch.float64 else probs.float()
        all_index, all_probs = all_gather_rows(index, probs)
        keep = first_occurrences(all_index)
        return all_index[keep], all_probs[keep]


def attach_target_sync(method: Any) -> None:  # an elr.engine.Method (the engine sits above this module)
    """Give every target bank of ``method`` (its ``target_banks``, :class:`elr.engine.Method`) a :class:`TargetSync`."""
    for bank in method.target_banks:
        bank.target_sync = TargetSync()


@torch.no_grad()
def broadcast_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, as DDP does before a forward."""
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)
