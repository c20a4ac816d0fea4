"""Spatial augmentation of latent batches: the dihedral group (flips and 90-degree rotations), applied
jointly to every spatial tensor of a sample. Exact for the tiny preset's area-down autoencoder."""

from __future__ import annotations

import torch


def dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Rotate (B, C, h, w) by k*90 degrees and optionally flip; exact for an area-down autoencoder."""
    x = torch.rot90(x, k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def augment(batch: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One random dihedral transform per sample, applied jointly to every spatial tensor."""
    ks = torch.randint(0, 4, (len(batch["target"]),), generator=gen)
    flips = torch.randint(0, 2, (len(batch["target"]),), generator=gen)
    out = {}
    for name, t in batch.items():
        out[name] = torch.stack([dihedral(t[i:i + 1], int(k), bool(f))[0] for i, (k, f) in enumerate(zip(ks, flips))])
    return out
