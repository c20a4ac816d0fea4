"""Build the SDXL-inpainting stand-in (real architecture, random weights) offline.

    python scripts/build_sdxl_standin.py [--out .rorem/sdxl-standin] [--seed 0]

Writes a diffusers ``StableDiffusionXLInpaintPipeline`` folder laid out like
diffusers/stable-diffusion-xl-1.0-inpainting-0.1 (fp16 variant files, ~7 GB on disk); a finished
build is reused. About 2-3 minutes and ~11 GB peak RSS on one CPU thread. Its ``unet/`` also serves
as a RORem-style bare UNet folder (``bootstrap.sdxl_unet``). See docs/sdxl.md.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

DEFAULT_OUT = Path(".rorem/sdxl-standin")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import torch

    from rorem_core.models.sdxl_standin import build_standin

    torch.set_num_threads(1)
    t0 = time.time()
    build_standin(args.out, seed=args.seed)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{args.out}: ready in {time.time() - t0:.0f} s, peak RSS {rss:.1f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
