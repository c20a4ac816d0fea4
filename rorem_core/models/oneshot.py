"""``rorem remove IMAGE MASK``: one-shot removal with a round's model, as RORem's inference script
(``inference_RORem.py``: Euler, 50 steps, strength 0.99, guidance 1, optional mask dilation; the
4-step model: LCM scheduler, 4 steps), then pasted back at the photo's full size (data/fullres.py).

RORem's README adds that its "quality prompts" can help (``--quality-prompts`` below sets them);
with guidance 1 only the prompt matters, the negative prompt needs ``--guidance-scale`` > 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from rorem_core.contract import RoundPaths
from rorem_core.data.fullres import default_feather, paste_back
from rorem_core.data.images import ImageError, load_mask, load_rgb
from rorem_core.data.latents import image_to_tensor, mask_to_tensor
from rorem_core.data.masks import dilate

# RORem's inference script (commented-out "these prompts make it work even better")
QUALITY_PROMPT = ("4K, high quality, masterpiece, Highly detailed, Sharp focus, Professional, "
                  "photorealistic, realistic")
QUALITY_NEGATIVE = ("low quality, worst, bad proportions, blurry, extra finger, Deformed, disfigured, "
                    "unclear background")
KINDS = ("sft", "dpo", "lcm", "rl")     # the models a round makes (RoundPaths.model)


class ModelNotFound(ValueError):
    """The --model name names no model in this project; the message lists what exists."""


def resolve_model(root: Path, name: str) -> tuple[Path, str]:
    """``--model`` -> (model dir, kind). Names: a path; ``base``; ``round-N`` (round N's SFT remover);
    ``sft|dpo|lcm|rl`` (the newest round that has one); ``KIND@N``. An LCM model samples with LCM."""
    root = Path(root)
    if Path(name).is_dir() or (root / name).is_dir() and "/" in name:
        p = Path(name) if Path(name).is_dir() else root / name
        return p, "lcm" if "lcm" in p.parts else "sft"
    if name == "base":
        return root / "models" / "base", "sft"
    kind, _, n = name.partition("@")
    if kind.startswith("round-"):
        kind, n = "sft", kind.removeprefix("round-")
    if kind not in KINDS or (n and not n.isdigit()):
        raise ModelNotFound(f"--model {name!r}: not a folder and not a model name; use a path, base, round-N, "
                            f"{'|'.join(KINDS)} or {'|'.join(KINDS)}@N")
    have = sorted(int(p.name.removeprefix("round-")) for p in (root / RoundPaths(1).model(kind)).parent.glob("round-*")
                  if p.name.removeprefix("round-").isdigit() and p.is_dir())
    want = int(n) if n else (have[-1] if have else None)
    if want is None or want not in have:
        raise ModelNotFound(f"--model {name!r}: no {kind} model {'of round ' + n if n else 'yet'} under "
                            f"{root / RoundPaths(1).model(kind).rsplit('/', 1)[0]} (have rounds {have or 'none'}); "
                            "run a round first or pass a model folder")
    return root / RoundPaths(want).model(kind), kind


@dataclass
class RemoveOptions:
    steps: int = 50
    scheduler: str = "euler"
    strength: float = 0.99          # RORem: < 1, the start is the source latent noised to t ~ 961
    seed: int = 0
    dilation: int = 0               # px at the photo's resolution (RORem: cv2.dilate k x k)
    feather: int | None = None      # px; None = two working-resolution pixels (default_feather)
    batch_size: int = 1


def load_pair(image: Path, mask: Path) -> tuple[np.ndarray, np.ndarray]:
    """(photo (H, W, 3) float [0, 1], mask (H, W) bool); ImageError / ValueError naming the file and the fix
    for an unreadable file, a mask of another size or an empty mask."""
    img, m = load_rgb(image), load_mask(mask)
    if m.shape != img.shape[:2]:
        raise ValueError(f"{mask}: mask is {m.shape[1]}x{m.shape[0]} but {image} is {img.shape[1]}x{img.shape[0]}; "
                         "give the mask the image's size")
    if not m.any():
        raise ValueError(f"{mask}: the mask is empty (no pixel >= 0.5): nothing to remove; draw the object")
    return img, m


def pair_problems(pairs: list[tuple[Path, Path]]) -> list[str]:
    """Every pair :func:`load_pair` would refuse, one line each: the folder form checks all before
    removing any (a bad mask half-way would otherwise stop a run with part of the results written)."""
    problems = []
    for image, mask in pairs:
        try:
            load_pair(image, mask)
        except (ImageError, ValueError) as e:
            problems.append(str(e))
    return problems


def remove_image(remover, image: Path, mask: Path, opts: RemoveOptions) -> np.ndarray:
    """One photo -> (H, W, 3) float [0, 1] at its own size, unchanged outside the feathered, dilated mask."""
    img, m = load_pair(image, mask)
    region = dilate(m, opts.dilation)
    res = remover.resolution
    out = remover.remove(image_to_tensor(img, res)[None], mask_to_tensor(region, res)[None], [opts.seed],
                         steps=opts.steps, scheduler=opts.scheduler, strength=opts.strength, batch_size=1)
    square = ((out[0].permute(1, 2, 0).numpy() + 1.0) / 2.0).clip(0, 1)
    feather = default_feather(*img.shape[:2], res) if opts.feather is None else opts.feather
    return paste_back(img, square, m, dilation=opts.dilation, feather=feather)


def pairs_in(images: Path, masks: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Folder form: images and masks matched by stem; returns (pairs, problems naming unmatched files
    and files that share a stem). Files of other types are skipped, as by ``rorem import``."""
    from rorem_core.data.importer import stem_index

    (im, im_clash, _), (mk, mk_clash, _) = stem_index(images), stem_index(masks)
    problems = [f"{p}: same stem as {first.name} (files are matched by stem; rename or remove one)"
                for p, first in im_clash + mk_clash]
    problems += [f"{im[s]}: no mask {masks}/{s}.* (add it or move the image out)" for s in im if s not in mk]
    problems += [f"{mk[s]}: no image {images}/{s}.* (rename it to its image's stem)" for s in mk if s not in im]
    return [(im[s], mk[s]) for s in im if s in mk], problems


def remove_many(remover, pairs: list[tuple[Path, Path]], opts: RemoveOptions) -> Iterator[tuple[Path, np.ndarray]]:
    for image, mask in pairs:
        yield image, remove_image(remover, image, mask, opts)


__all__ = ["KINDS", "ModelNotFound", "QUALITY_NEGATIVE", "QUALITY_PROMPT", "RemoveOptions", "load_pair",
           "pair_problems", "pairs_in",
           "remove_image", "remove_many", "resolve_model"]
