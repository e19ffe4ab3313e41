"""One process or many (torchrun): the process group, rank-aware sampling and gathering."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world() -> World:
    """Join the torchrun process group when launched by torchrun; else a world of one."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World()
    if not dist.is_initialized():
        # NCCL for the CUDA tensors (gradients, buffers); gloo beside it for the few CPU tensors
        # the ranks agree on (all_mean, any_rank), which NCCL alone refuses.
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    if dist.get_rank() != 0:  # every rank runs the same loop: one copy of the progress log is enough
        logging.getLogger().setLevel(logging.WARNING)
    return World(dist.get_rank(), dist.get_world_size(), local)


def device_for(world: World) -> torch.device:
    return torch.device(f"cuda:{world.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def mix_seed(*parts: int) -> int:
    """A 31-bit seed from several integers (seed, fold, epoch, row …)."""
    h = 0x345678
    for p in parts:
        h = (h * 1_000_003) ^ (int(p) & 0xFFFFFFFFFFFF)
        h &= 0xFFFFFFFFFFFFFFFF
    return h % (2**31 - 1)


class SeededSampler(Sampler):
    """Yields (row, seed) pairs: the row order and every row's augmentation seed follow from
    (seed, epoch) alone, so a resumed run replays exactly what an uninterrupted one would.

    With `weights`, each epoch draws n rows with replacement, each with a chance proportional to
    its weight (class-balanced sampling, as torch's WeightedRandomSampler), from the same seed.

    With several ranks it shards like DistributedSampler: padded to a multiple of the world
    size, rank r takes every size-th row from r.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True, world: World | None = None, weights=None):
        self.n, self.seed, self.shuffle, self.world = n, seed, shuffle, world or World()
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """The epoch to draw; `skip` leaves out this rank's first rows (an epoch resumed part-way)."""
        self.epoch, self.skip = epoch, skip

    def _order(self) -> list[int]:
        if self.weights is not None:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist()
        elif self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.world.distributed:
            per_rank = -(-self.n // self.world.size)
            order = (order * 2)[: per_rank * self.world.size] if self.n else order
            order = order[self.world.rank :: self.world.size]
        return order

    def __iter__(self):
        if self.weights is not None:  # a row drawn twice is augmented twice, differently
            keys = [(i, mix_seed(self.seed, self.epoch, i, k)) for k, i in enumerate(self._order())]
        else:
            keys = [(i, mix_seed(self.seed, self.epoch, i)) for i in self._order()]
        return iter(keys[self.skip:])

    def __len__(self) -> int:
        return (-(-self.n // self.world.size) if self.world.distributed else self.n) - self.skip


class ShardSampler(Sampler):
    """Evaluation rows for one rank, in order, padded; `gather_rows` undoes the padding."""

    def __init__(self, n: int, world: World | None = None):
        self.n, self.world = n, world or World()

    def __iter__(self):
        if not self.world.distributed:
            return iter(range(self.n))
        per_rank = -(-self.n // self.world.size)
        return iter([(self.world.rank + k * self.world.size) % self.n for k in range(per_rank)])

    def __len__(self) -> int:
        return -(-self.n // self.world.size) if self.world.distributed else self.n


def gather_rows(local, n: int, world: World):
    """Reassemble per-rank arrays (from ShardSampler order) into the original n rows."""
    if not world.distributed:
        return local
    import numpy as np

    parts: list = [None] * world.size
    dist.all_gather_object(parts, local)
    per_rank = -(-n // world.size)
    out = np.empty((n, *np.asarray(parts[0]).shape[1:]), dtype=np.asarray(parts[0]).dtype)
    for r, part in enumerate(parts):
        for k in range(per_rank):
            row = r + k * world.size
            if row < n:
                out[row] = part[k]
    return out


def all_mean(value: float, weight: float, world: World) -> float:
    """Weighted mean of a per-rank value over all ranks."""
    if not world.distributed:
        return value
    t = torch.tensor([value * weight, weight], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0] / t[1])


def broadcast_buffers(model: torch.nn.Module, world: World) -> None:
    """Copy the first rank's buffers (BatchNorm running statistics) to every rank.

    DDP syncs gradients, not the statistics each rank's last forward pass updated: without
    this, every rank would validate its share of the rows with other statistics than the
    ones the first rank saves in the checkpoint.
    """
    if not world.distributed:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def any_rank(signum: int | None, world: World) -> int | None:
    """The signal any rank received (the largest number), so every rank stops together."""
    if not world.distributed:
        return signum
    flag = torch.tensor([signum or 0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def broadcast_object(obj, world: World):
    """The first rank's `obj` on every rank (picklable Python data)."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
