"""Stage 0, bootstrap (once): the base model dir and the embedded default data.

tiny: build the SDXL-architecture parts from small configs (fixed seed), then take the base
remover UNet from the shipped pretrained weights (seconds), or pretrain it here on a synthetic
"open-source" set (the RORD/Mulan stand-in; ~20 CPU-minutes for the shipped card), or leave it
random. sdxl: write a ref to SDXL-inpainting (local dir or hub id), optionally with a RORem UNet.
Both: write the synthetic seed triplets, round pools (+ hidden GT) and the test split.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from rorem_core.config import BootstrapConfig, config_hash
from rorem_core.io import atomic_dir, write_json_atomic
from rorem_core.models.conditioning import EMBED_FILE, encode_empty_prompt, save_prompt_embeds
from rorem_core.models.loading import COND_FILE, load_vae, write_ref
from rorem_core.models.tiny import build_tiny_model
from rorem_core.stages import _cli

_SPLIT_SIZES = {"n_seed", "n_test", "pool_size", "n_pools", "test_hard_fraction", "pool_hard_fraction"}
ASSETS = Path(__file__).resolve().parents[1] / "assets"   # shipped bases: tiny_base*/ (unet/, card.json)


class BootstrapResult(BaseModel):
    model_dir: str
    data: dict
    base_unet: str
    ae_psnr_db: float | None = None      # held-out reconstruction PSNR of the autoencoder
    pretrain: dict | None = None


def shipped_key(cfg: BootstrapConfig) -> str:
    """What the shipped UNet depends on: architecture, resolution, pretraining recipe and data."""
    # split sizes do not affect pretraining; texture_scale 1 draws the scenes of before the field
    # existed, so it is left out of the key there (the shipped cards made then stay valid)
    unkeyed = _SPLIT_SIZES | ({"texture_scale"} if cfg.synthetic.texture_scale == 1 else set())
    scenes = cfg.synthetic.model_dump_json(exclude=unkeyed)
    fill = () if cfg.masked_fill == "zero" else (f"masked_fill={cfg.masked_fill}",)   # zero: the keys of before
    return config_hash(cfg.tiny, str(cfg.base.resolution), cfg.pretrain.model_dump_json(),
                       str(cfg.pretrain_size), str(cfg.base.seed), scenes, *fill)[:16]


def shipped_bases() -> dict[str, Path]:
    """Shipped tiny bases by their card's key (one per scene config, e.g. a texture scale)."""
    out = {}
    for d in sorted(ASSETS.glob("tiny_base*")):
        if (d / "card.json").is_file() and (d / "unet").is_dir():
            out[json.loads((d / "card.json").read_text())["key"]] = d
    return out


def build_tiny(cfg: BootstrapConfig, out: Path) -> dict | None:
    """Write the tiny model dir; returns pretraining stats when the UNet was trained here."""
    build_tiny_model(out, cfg.tiny, cfg.base.resolution)
    save_prompt_embeds(out / EMBED_FILE, encode_empty_prompt(str(out)))
    if cfg.masked_fill != "zero":   # read by every stage that feeds this base's remover (masked_fill_of)
        write_json_atomic(out / COND_FILE, {"masked_fill": cfg.masked_fill})
    if cfg.base_unet == "shipped":
        shipped = shipped_bases()
        if (key := shipped_key(cfg)) not in shipped:
            raise FileNotFoundError(
                f"{ASSETS}/tiny_base*: no shipped tiny base matches these bootstrap params (key {key}; "
                f"shipped: {', '.join(f'{k} in {d.name}' for k, d in shipped.items()) or 'none'}); set "
                "bootstrap.base_unet: train to pretrain it here (scripts/pretrain_tiny_base.py ships one)")
        shutil.rmtree(out / "unet")
        shutil.copytree(shipped[key] / "unet", out / "unet")
        return None
    if cfg.base_unet == "train":
        return pretrain_unet(cfg, out)
    return None


def pretrain_unet(cfg: BootstrapConfig, model_dir: Path) -> dict:
    """Pretrain the random tiny UNet on a synthetic pretraining set (same trainer as every round)."""
    from rorem_core.config import TrainRemoverConfig
    from rorem_core.data.synthetic import write_triplets
    from rorem_core.training.sft import train_remover

    work = Path(cfg.base.work_dir) / "bootstrap" / shipped_key(cfg)
    data = work / "pretrain_data"
    if not (data / "meta.json").is_file():
        write_triplets(data, cfg.synthetic, "pretrain", cfg.pretrain_size, cfg.synthetic.seed_hard_fraction)
    tcfg = TrainRemoverConfig(base=cfg.base, **cfg.pretrain.model_dump())
    done = work / "unet_out" / "train_summary.json"     # a finished pretraining (same key) is reused
    if not done.is_file():
        t0 = time.time()
        train_remover(tcfg, model_dir, [data / "meta.json"], work / "unet_out", run_name="bootstrap/pretrain",
                      work_key=shipped_key(cfg))
        summary = json.loads(done.read_text())
        summary["seconds"] = round(time.time() - t0, 1)
        write_json_atomic(done, summary)
    shutil.rmtree(model_dir / "unet")
    shutil.copytree(work / "unet_out" / "unet", model_dir / "unet")
    s = json.loads(done.read_text())
    return {"steps": s["steps"], "seconds": s.get("seconds"), "first_loss": s["first_loss"],
            "last_loss": s["last_loss"], "losses": s["losses"], "key": shipped_key(cfg)}


@torch.no_grad()
def autoencoder_psnr(model_dir: Path, test_dir: Path, resolution: int, limit: int = 200) -> float:
    """Mean PSNR (dB) of test GT images passed through the VAE (the removal quality ceiling)."""
    from rorem_core.data.formats import read_triplets
    from rorem_core.data.images import load_rgb
    from rorem_core.data.latents import encode_images, image_to_tensor

    vae = load_vae(model_dir)
    entries = read_triplets(test_dir / "meta.json")[:limit]
    x = torch.stack([image_to_tensor(load_rgb(test_dir / e.GT), resolution) for e in entries])
    z = encode_images(vae, x) / vae.config.scaling_factor
    y = vae.decode(z).sample.clamp(-1, 1)
    mse = (((y - x) / 2) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float(np.mean(-10 * torch.log10(mse).numpy()))


def check_sdxl_inputs(cfg: BootstrapConfig) -> None:
    """bootstrap.sdxl_pretrained (a diffusers SDXL-inpainting folder) and bootstrap.sdxl_unet (a bare
    UNet folder, RORem's final_unet/ layout) are complete and of the right architecture; hub ids pass."""
    from rorem_core.models.folders import ModelFolderError, check_model_dir, check_unet_folder

    try:
        check_model_dir(cfg.sdxl_pretrained)
        if cfg.sdxl_unet and Path(cfg.sdxl_unet).exists():
            check_unet_folder(Path(cfg.sdxl_unet))
    except ModelFolderError as e:
        raise ModelFolderError(f"bootstrap.sdxl_pretrained / sdxl_unet: {e}") from None


def _unet_ref(unet: str | None, model_out: Path) -> str | None:
    """A local UNet folder is stored relative to the model dir (rorem_model.json resolves it so), which
    keeps the ref valid whatever the working directory; a hub id passes unchanged."""
    import os

    if unet and Path(unet).exists():
        return os.path.relpath(Path(unet).resolve(), model_out.resolve())
    return unet


def write_round0(labels_out: Path, disc_out: Path) -> None:
    """Round 0 has no human labels and no discriminator: both are written as explicit empty artifacts,
    so round 1's labels and select stages depend on "the previous round" like every other round."""
    from rorem_core.reward.discriminator import write_no_discriminator

    with atomic_dir(labels_out) as tmp:
        write_json_atomic(tmp / "meta.json", [])
    with atomic_dir(disc_out) as tmp:
        write_no_discriminator(tmp)


def run(cfg: BootstrapConfig, model_out: Path, data_root: Path, *, labels_out: Path | None = None,
        disc_out: Path | None = None) -> BootstrapResult:
    from rorem_core.data.synthetic import write_all

    if cfg.synthetic.size != cfg.base.resolution and cfg.preset == "tiny":
        raise ValueError(f"bootstrap.synthetic.size={cfg.synthetic.size} differs from base.resolution="
                         f"{cfg.base.resolution}; set them equal for the tiny preset")
    if cfg.preset == "sdxl":     # a wrong or incomplete model folder fails here, before any data is written
        check_sdxl_inputs(cfg)
    data = write_all(cfg.synthetic, data_root)
    pre = None
    with atomic_dir(model_out) as tmp:
        if cfg.preset == "tiny":
            pre = build_tiny(cfg, tmp)
        else:
            write_ref(tmp, cfg.sdxl_pretrained, unet=_unet_ref(cfg.sdxl_unet, model_out), lora=None)
    write_round0(labels_out or data_root / "labels" / "round-0",
                 disc_out or model_out.parent / "discriminator" / "round-0")
    psnr = autoencoder_psnr(model_out, data_root / "test", cfg.base.resolution) if cfg.preset == "tiny" else None
    return BootstrapResult(model_dir=str(model_out), data=data, base_unet=cfg.base_unet if cfg.preset == "tiny"
                           else (cfg.sdxl_unet or cfg.sdxl_pretrained), ae_psnr_db=psnr, pretrain=pre)


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("bootstrap", __doc__)
    p.add_argument("--model-out", type=Path, default=Path("models/base"))
    p.add_argument("--data-root", type=Path, default=Path("data"))
    p.add_argument("--metrics", type=Path, default=Path("results/bootstrap/metrics.json"))
    p.add_argument("--labels-out", type=Path, help="round 0's (empty) labels; default DATA_ROOT/labels/round-0")
    p.add_argument("--disc-out", type=Path, help="round 0's no-discriminator marker; default models/discriminator/round-0")
    args = p.parse_args(argv)

    def body(cfg):
        res = run(cfg, args.model_out, args.data_root, labels_out=args.labels_out, disc_out=args.disc_out)
        _cli.write_metrics(args.metrics, {"ae_psnr_db": res.ae_psnr_db, "base_unet": res.base_unet,
                                          "data": res.data, "pretrain": res.pretrain})
        return res

    return _cli.run_main("bootstrap", args, body)


if __name__ == "__main__":
    raise SystemExit(main())
