"""The own-data subcommands of ``rorem`` (docs/own-data.md): ``import`` (photos + masks into the
project), ``remove`` (one-shot removal at full resolution), ``export`` (a round's model as a
self-contained diffusers folder). Each imports its layer lazily, like the rest of the CLI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def project_dir(path: str | None) -> Path:
    """``--root`` or the nearest folder with params.yaml or .git."""
    from annotation.server import find_project_root

    return Path(path).resolve() if path else find_project_root()


def _import(argv: list[str]) -> int:
    """Check, normalise and write under data/imported, name it in params.yaml, then `dvc add` it."""
    p = argparse.ArgumentParser(prog="rorem import", description="import photos + masks (docs/own-data.md)")
    p.add_argument("kind", choices=("seed", "pool", "test"))
    p.add_argument("path", type=Path, help="a RORem dataset (meta.json) or a folder with images/ + masks/ (+ gt/)")
    p.add_argument("--round", type=int, help="pool only: the round it feeds (default: the next unstarted one)")
    p.add_argument("--root")
    args = p.parse_args(argv)
    if args.round is not None and args.kind != "pool":
        print(f"error: --round is for pools; a {args.kind} set is not per round (drop --round)", file=sys.stderr)
        return 2
    root = project_dir(args.root)
    from rorem_core.data.importer import ImportRefused, import_dataset

    try:
        res = import_dataset(root, args.kind, args.path, args.round)
    except ImportRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if (root / ".dvc").is_dir():     # version it like every other dataset (idempotent for the same content)
        from tasks.dvc import dvc

        for rel in filter(None, (res.path, res.hidden)):
            dvc(root, "add", "-q", rel)
    what = "imported" if res.changed else "already imported (nothing changed)"
    print(f"{what}: {res.n} {args.kind} entries ({'with' if res.has_gt else 'without'} GT) -> {res.path}"
          + (f" (GT: {res.hidden})" if res.hidden else ""))
    for k, v in res.params.items():
        print(f"  params.yaml {k} = {v}")
    for note in res.notes:
        print(f"  note: {note}")
    return 0


def _remove(argv: list[str]) -> int:
    """One photo (IMAGE MASK) or two folders matched by stem; results at the photo's own size."""
    from rorem_core.models.oneshot import QUALITY_NEGATIVE, QUALITY_PROMPT

    p = argparse.ArgumentParser(prog="rorem remove", description="remove the masked object (docs/own-data.md)")
    p.add_argument("image", type=Path, help="a photo, or a folder of photos")
    p.add_argument("mask", type=Path, help="its mask (white = remove), or a folder of masks with the same stems")
    p.add_argument("-o", "--out", type=Path, help="output file (folder form: folder); default <stem>_removed.png")
    p.add_argument("--model", default="sft", help="a model folder, base, round-N, sft|dpo|lcm|rl (newest) or KIND@N")
    p.add_argument("--lora", type=Path, help="an extra LoRA fused on top (e.g. RORem's LCM LoRA; use --scheduler lcm)")
    p.add_argument("--steps", type=int, help="sampler steps (default 50 Euler; 4 for an LCM model)")
    p.add_argument("--scheduler", choices=("euler", "lcm"), help="default: lcm for an LCM model, else euler")
    p.add_argument("--strength", type=float, default=0.99, help="RORem: 0.99")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dilate", type=int, default=0, help="grow the mask by this many pixels first (RORem: ~10)")
    p.add_argument("--feather", type=int, help="feathered edge, px (default: two working-resolution pixels)")
    p.add_argument("--prompt", default="", help="RORem trains with the empty prompt")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--guidance-scale", type=float, default=1.0, help="> 1 turns classifier-free guidance on")
    p.add_argument("--quality-prompts", action="store_true",
                   help=f"RORem's quality prompt / negative prompt: {QUALITY_PROMPT!r} / {QUALITY_NEGATIVE!r}")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: params.yaml base.device)")
    p.add_argument("--root")
    args = p.parse_args(argv)
    root = project_dir(args.root)
    from rorem_core.config import stage_config
    from rorem_core.config.base import ConfigError
    from rorem_core.data.images import ImageError, save_png
    from rorem_core.device import resolve_device
    from rorem_core.models.oneshot import ModelNotFound, RemoveOptions, pair_problems, pairs_in, remove_many, resolve_model
    from rorem_core.models.remover import Remover

    try:
        params = _params_or_empty(root)
        base = stage_config("generate", params).base
        ref, kind = resolve_model(root, args.model)
    except (ConfigError, ModelNotFound) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    scheduler = args.scheduler or ("lcm" if kind == "lcm" or args.lora else "euler")
    opts = RemoveOptions(steps=args.steps or (4 if scheduler == "lcm" else 50), scheduler=scheduler,
                         strength=args.strength, seed=args.seed, dilation=args.dilate, feather=args.feather)
    if args.image.is_dir():
        if not args.mask.is_dir():
            print(f"error: {args.image} is a folder, so MASK must be a folder of masks too", file=sys.stderr)
            return 2
        pairs, problems = pairs_in(args.image, args.mask)
        problems += pair_problems(pairs)       # every unreadable file and bad mask, before any removal
        out_dir = args.out or args.image.parent / f"{args.image.name}_removed"
        outs = {img: out_dir / f"{img.stem}.png" for img, _ in pairs}
    else:
        pairs, problems = [(args.image, args.mask)], []
        outs = {args.image: args.out or args.image.with_name(f"{args.image.stem}_removed.png")}
    if problems:
        print("error: unmatched, ambiguous or unusable files (nothing removed):\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 1
    prompt, negative = (QUALITY_PROMPT, QUALITY_NEGATIVE) if args.quality_prompts else (args.prompt,
                                                                                       args.negative_prompt)
    remover = Remover.load(ref, cache_dir=base.cache_dir, resolution=base.resolution,
                           device=resolve_device(args.device or base.device), prompt=prompt,
                           negative_prompt=negative, guidance_scale=args.guidance_scale, lora=args.lora)
    from tqdm import tqdm

    try:
        for img, result in tqdm(remove_many(remover, pairs, opts), total=len(pairs), desc="remove",
                                disable=len(pairs) < 2, unit="img"):
            save_png(outs[img], result)
            if len(pairs) == 1:
                print(f"{outs[img]} ({result.shape[1]}x{result.shape[0]}, model {ref})")
    except (ImageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if len(pairs) > 1:
        print(f"{len(pairs)} results in {out_dir} (model {ref})")
    return 0


def _export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="rorem export", description="a round's model as a diffusers folder")
    p.add_argument("out", type=Path, help="new folder: AutoPipelineForInpainting.from_pretrained(OUT) loads it")
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--model", choices=("sft", "dpo", "lcm", "rl"), default="sft")
    p.add_argument("--root")
    args = p.parse_args(argv)
    from rorem_core.models.export import ExportError, export

    try:
        info = export(project_dir(args.root), args.round, args.model, args.out)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"exported round {args.round} {args.model} -> {args.out} ({info['sampler']['scheduler']}, "
          f"{info['sampler']['num_inference_steps']} steps); model card: {args.out / 'README.md'}")
    return 0


def _params_or_empty(root: Path) -> dict:
    from rorem_core.config import load_params

    return load_params(root / "params.yaml") if (root / "params.yaml").is_file() else {}


COMMANDS = {"import": _import, "remove": _remove, "export": _export}
