"""What the remover sees in the hole of its masked-source input (the 4 "masked" latent channels).

- ``zero``: ``source * (1 - mask)``: masked pixels are 0 in [-1, 1] (mid grey), as diffusers' SDXL
  inpainting pipeline and RORem feed them. Every SDXL / RORem weight expects this.
- ``harmonic``: the hole filled with the solution of Laplace's equation whose boundary values are the
  source just outside it: the smoothest fill that meets its surroundings, exact on linear gradients.
  The tiny remover cannot learn on CPU budgets to infer a hole's tone from its surroundings to within
  the ~2 grey levels a person sees on a calm background (docs/judge.md): given this fill, it only has
  to add what the smooth fill lacks (texture). No ground truth enters it: a function of source and mask.

Which one a remover was trained with is a property of its base model (``conditioning.json`` next to
the base's ``model_index.json``, ``rorem_core.models.loading.masked_fill_of``); training, sampling
and RL all read it from there, so a model is always fed what it was trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FILLS = ("zero", "harmonic")


def _neighbour_sum(h: torch.Tensor) -> torch.Tensor:
    """Sum of the 4 neighbours of each pixel of (B, C, H, W); the image border repeats its edge."""
    p = F.pad(h, (1, 1, 1, 1), mode="replicate")
    return p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]


@torch.no_grad()
def harmonic_fill(images: torch.Tensor, masks: torch.Tensor, *, iters: int = 2000, tol: float = 1e-10) -> torch.Tensor:
    """images (B, C, H, W), masks (B, 1, H, W) in {0, 1} -> images with each hole solving Laplace's
    equation (5-point stencil) with the pixels outside it as boundary values.

    Solved for the hole pixels by conjugate gradients, per image, in float64:
    ``A h = m (4 h - N(m h))``, ``b = m N((1 - m) x)`` with ``N`` the neighbour sum; stops when every
    image's squared residual norm is below ``tol``. A hole with no boundary (the whole image) is filled
    with 0 (mid grey in [-1, 1])."""
    x = images.double()
    m = (masks > 0.5).double().expand_as(x)
    apply = lambda h: m * (4 * h - _neighbour_sum(m * h))  # noqa: E731
    b = m * _neighbour_sum((1 - m) * x)
    h = torch.zeros_like(x)
    r = b.clone()
    p = r.clone()
    rs = (r * r).sum((1, 2, 3), keepdim=True)
    for _ in range(iters):
        if float(rs.max()) < tol:
            break
        ap = apply(p)
        alpha = rs / (p * ap).sum((1, 2, 3), keepdim=True).clamp_min(1e-300)
        h, r = h + alpha * p, r - alpha * ap
        rn = (r * r).sum((1, 2, 3), keepdim=True)
        p, rs = r + rn / rs.clamp_min(1e-300) * p, rn
    return ((1 - m) * x + m * h).to(images.dtype)


def masked_source(images: torch.Tensor, masks: torch.Tensor, fill: str) -> torch.Tensor:
    """The image whose latent is the remover's masked-source input: (B, 3, R, R) in [-1, 1]."""
    if fill == "zero":
        return images * (1.0 - masks)
    if fill == "harmonic":
        return harmonic_fill(images, masks)
    raise ValueError(f"masked fill {fill!r} is not one of {FILLS}; set bootstrap.masked_fill (or the base's "
                     "conditioning.json) to one of them")
