"""``rorem export --round N --model sft|dpo|lcm|rl OUT``: a self-contained diffusers folder.

A round's remover dir holds only its UNet or LoRA and points at the base (models/loading.py). The
export resolves that: every part (UNet with its whole LoRA stack **fused**, VAE, both text encoders and
tokenizers, scheduler) is written into OUT by ``StableDiffusionXLInpaintPipeline.save_pretrained``,
so ``AutoPipelineForInpainting.from_pretrained(OUT)`` loads it offline with nothing else. The 4-step
model gets ``LCMScheduler`` (RORem-4S: 4 steps, guidance 1, strength 0.99). The tiny preset's analytic
autoencoder is our own class and diffusers imports no module a folder merely names, so loading a
*tiny* export needs ``import rorem_core.models.analytic_ae`` first; an SDXL export is plain diffusers.

OUT/README.md is a model card: the round's evaluation metrics (held-out test split), the training-set
counts, the git commit / tag and the DVC hashes (dvc.lock) of what it came from; OUT/rorem_export.json
holds the same as data.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from rorem_core.contract import RoundPaths
from rorem_core.io import atomic_dir, write_json_atomic, write_text_atomic
from rorem_core.models.loading import (
    COND_FILE,
    load_scheduler_config,
    load_unet_fused,
    load_vae,
    masked_fill_of,
    resolve_ref,
)

KINDS = ("sft", "dpo", "lcm", "rl")
EVAL_STAGE = {"sft": "evaluate", "dpo": "evaluate_dpo", "lcm": "evaluate_lcm", "rl": "evaluate_rl"}
_EULER = {"scheduler": "EulerDiscreteScheduler", "num_inference_steps": 50, "strength": 0.99}
# rl: the online-RL remover is sampled as evaluate_rl samples it (Euler 50), like the SFT and DPO ones
SAMPLER = {"sft": _EULER, "dpo": _EULER, "lcm": {"scheduler": "LCMScheduler", "num_inference_steps": 4, "strength": 0.99},
           "rl": _EULER}


class ExportError(ValueError):
    """The round's model or its base is missing; the message names it and the fix."""


def build_pipeline(ref: Path, kind: str):
    """The SDXL-inpainting pipeline of a model ref, LoRA fused into its UNet."""
    import diffusers
    from diffusers import StableDiffusionXLInpaintPipeline

    r = resolve_ref(ref)
    unet = load_unet_fused(ref)   # the whole adapter stack fused in, adapter layers dropped: a plain UNet
    # the VAE passed in: diffusers refuses to import a custom class (the tiny analytic autoencoder) by name
    pipe = StableDiffusionXLInpaintPipeline.from_pretrained(r.base, unet=unet, vae=load_vae(ref))
    sched_cls = getattr(diffusers, SAMPLER[kind]["scheduler"])
    pipe.scheduler = sched_cls.from_config(load_scheduler_config(ref))
    return pipe


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def provenance(root: Path, n: int, kind: str) -> dict[str, Any]:
    """Metrics, training-set counts, git commit/tag and DVC hashes of round n's ``kind`` model."""
    import yaml

    rp = RoundPaths(n)
    metrics = _json(root / rp.metrics(EVAL_STAGE[kind]))
    counts = {}
    for stage in ("trainset", "train_remover", "build_pairs", "train_dpo", "distill", "labels", "auto_score"):
        m = _json(root / rp.metrics(stage)) or {}
        counts[stage] = {k: v for k, v in m.items() if k.startswith("n_") and isinstance(v, int)}
    counts = {k: v for k, v in counts.items() if v}
    lock = {}
    try:
        lock = yaml.safe_load((root / "dvc.lock").read_text()).get("stages", {})
    except (OSError, AttributeError, yaml.YAMLError):
        pass
    want = {rp.model(kind), rp.remover, rp.trainset, rp.pairs, "models/base"}
    hashes = {o["path"]: o.get("md5") for st in lock.values() for o in st.get("outs", []) if o.get("path") in want}

    def git(*args: str) -> str | None:
        r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return r.stdout.strip() or None if r.returncode == 0 else None

    return {"round": n, "model": kind, "source": rp.model(kind), "metrics": metrics, "training_counts": counts,
            "git_commit": git("rev-parse", "HEAD"), "git_tag": git("describe", "--tags", "--always"),
            "round_tag": f"round-{n}" if git("rev-parse", "-q", "--verify", f"refs/tags/round-{n}") else None,
            "dvc_md5": hashes, "sampler": SAMPLER[kind]}


def model_card(info: dict[str, Any]) -> str:
    s = info["sampler"]
    lines = [f"# rorem-loop round {info['round']} {info['model'].upper()} remover", "",
             "An object remover (SDXL-inpainting architecture) from a human-in-the-loop round of rorem-loop.", "",
             "```python", "from diffusers import AutoPipelineForInpainting",
             *(["import rorem_core.models.analytic_ae  # tiny preset only: its autoencoder class"]
               if info.get("custom_vae") else []),
             "pipe = AutoPipelineForInpainting.from_pretrained(\"THIS_FOLDER\")",
             f"out = pipe(prompt=\"\", image=image, mask_image=mask, num_inference_steps={s['num_inference_steps']},",
             f"           strength={s['strength']}, guidance_scale=1.0).images[0]", "```", "",
             f"Scheduler: {s['scheduler']}. Paste the result back into the original photo outside the mask "
             "(`rorem remove` does this at full resolution).", "",
             *([f"**Trained with a {info['masked_fill']} masked fill** (rorem_core/data/fill.py): diffusers' "
                "inpainting pipelines feed the hole as grey, which this UNet was not trained on; use "
                "`rorem remove` (or fill the masked image the same way) for its quality.", ""]
               if info.get("masked_fill", "zero") != "zero" else []),
             "## Evaluation (held-out test split)", ""]
    m = info.get("metrics") or {}
    if m:
        keys = sorted(next(iter(m.values())).get("all", {}))
        lines += ["| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]

        def cell(v: Any) -> str:
            return (f"{v:.4g}" if isinstance(v, float) else "[" + ", ".join(cell(x) for x in v) + "]"
                    if isinstance(v, list) else str(v))

        for name, agg in m.items():
            a = agg.get("all", {})
            lines += [f"| {name} | " + " | ".join(cell(a.get(k)) for k in keys) + " |"]
    else:
        lines += ["not evaluated yet (no metrics file for this round)"]
    lines += ["", "## Training-set counts", ""]
    lines += [f"- {st}: " + ", ".join(f"{k} {v}" for k, v in c.items()) for st, c in info["training_counts"].items()]
    lines += ["", "## Provenance", "", f"- source: `{info['source']}`", f"- git commit: `{info['git_commit']}`",
              f"- git describe: `{info['git_tag']}`, round tag: `{info['round_tag']}`"]
    lines += [f"- DVC md5 of `{p}`: `{h}`" for p, h in sorted(info["dvc_md5"].items())] or ["- no dvc.lock entry"]
    return "\n".join(lines) + "\n"


def export(root: Path, n: int, kind: str, out: Path) -> dict[str, Any]:
    """Write the self-contained folder ``out`` (atomic); returns the provenance written to its card."""
    if kind not in KINDS:
        raise ExportError(f"--model {kind!r}: use one of {', '.join(KINDS)}")
    root = Path(root)
    src = root / RoundPaths(n).model(kind)
    if not src.is_dir():
        raise ExportError(f"{src}: round {n} has no {kind} model; run the round (`rorem round {n}`) or pick "
                          "another --round / --model")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out}: exists and is not empty; choose a new folder or delete it")
    info = provenance(root, n, kind)
    info["masked_fill"] = masked_fill_of(src)
    pipe = build_pipeline(src, kind)
    info["custom_vae"] = type(pipe.vae).__module__.split(".")[0] not in ("diffusers",)
    with atomic_dir(out) as tmp:
        pipe.save_pretrained(str(tmp))
        _fix_custom_components(tmp, pipe)
        write_json_atomic(tmp / "rorem_export.json", info)
        if info["masked_fill"] != "zero":   # rorem's loaders read it; a plain diffusers pipeline cannot
            write_json_atomic(tmp / COND_FILE, {"masked_fill": info["masked_fill"]})
        write_text_atomic(tmp / "README.md", model_card(info))
    return info


def _fix_custom_components(folder: Path, pipe) -> None:
    """save_pretrained records a custom class by its top-level package; point it at the module that
    defines it (the tiny preset's analytic autoencoder), so from_pretrained can import it."""
    idx = json.loads((folder / "model_index.json").read_text())
    for name, entry in idx.items():
        comp = getattr(pipe, name, None)
        if isinstance(entry, list) and comp is not None and entry[0] not in ("diffusers", "transformers"):
            idx[name] = [type(comp).__module__, type(comp).__name__]
    write_json_atomic(folder / "model_index.json", idx)


__all__ = ["ExportError", "KINDS", "build_pipeline", "export", "model_card", "provenance"]
