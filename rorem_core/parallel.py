"""Data-parallel inference: one process per device under ``accelerate launch`` (or ``torchrun``).

A stage whose cost grows with its inputs (generate, the selection scoring, auto_score, evaluate)
splits its work into fixed UNIT-sized blocks (the same blocks as a single process makes: a block is one
UNet batch), gives block b to process b mod N, and gathers what every process made on the main process,
which writes the manifest and swaps the output into place. Seeds are per item, and each block is the
same batch whatever N is, so 1 and N processes write byte-identical files (same torch thread count).

Everything a process writes goes into ONE shared staging folder next to the output (disjoint files per
block); the main process makes it before anyone writes and swaps it into place after everyone is done.
A killed run leaves only the staging folder, which the next run discards.

With one process (no WORLD_SIZE, or 1) nothing here starts a process group.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rorem_core.io import atomic_dir, replace_dir

T = TypeVar("T")


@dataclass(frozen=True)
class Shards:
    """This process's place among ``world`` data-parallel processes (rank 0 is the main one)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def blocks(self, n_items: int, block: int) -> list[tuple[int, int]]:
        """(lo, hi) of this process's blocks of ``block`` consecutive items out of ``n_items``."""
        starts = range(0, n_items, max(1, block))
        return [(lo, min(lo + block, n_items)) for b, lo in enumerate(starts) if b % self.world == self.rank]

    def gather(self, obj: T) -> list[T]:
        """Every process's ``obj`` in rank order, on every process (a barrier too)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def shards() -> Shards:
    """Shards of this process: from the launcher's WORLD_SIZE / RANK (accelerate launch, torchrun), the
    process group started here when needed (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shards()
    import torch.distributed as dist

    from rorem_core.device import process_group_backend

    if not dist.is_initialized():
        backend = process_group_backend()
        if backend == "nccl":       # each process on its own GPU before NCCL's first collective
            import torch

            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return Shards(dist.get_rank(), dist.get_world_size())


def end_process_group() -> None:
    """Destroy the process group after a stage's last collective (NCCL warns when it is left to the exit)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def flatten_in_order(parts: Sequence[Sequence[tuple[int, list[T]]]]) -> list[T]:
    """The gathered ``[(block_start, items), ...]`` of every process as one list in block order."""
    return [x for _, items in sorted((p for part in parts for p in part), key=lambda p: p[0]) for x in items]


@contextmanager
def sharded_output_dir(path: str | os.PathLike, sh: Shards) -> Iterator[Path]:
    """``atomic_dir`` for N processes: every process gets the same staging folder; after the block, once
    all processes are done, the main process swaps it into ``path``. One process: ``atomic_dir`` itself."""
    if sh.world == 1:
        with atomic_dir(path) as tmp:
            yield tmp
        return
    path = Path(path)
    staging = path.with_name(f".{path.name}.shards")
    if sh.main:                        # a killed earlier run's files are not this run's
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    sh.barrier()
    yield staging
    sh.barrier()                       # every process has written its blocks
    if sh.main:
        replace_dir(staging, path)
    sh.barrier()                       # nobody reads ``path`` before it is in place
