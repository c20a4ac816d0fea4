"""Preference-learning experiments and benchmarks on the tiny preset (CPU), printed side by side.

    python benchmarks/bench_preference.py --part all [--workspace DIR] [--out DIR]

Parts:
  dpo      pairs from K candidates per pool input (oracle-scored: masked PSNR vs hidden GT), DPO
           LoRA, held-out implicit accuracy, success rate (oracle and discriminator) of the pre-DPO
           and DPO removers on the test split with 95 % intervals and the paired difference
  distill  50-step teacher vs 4-step LCM students (plain and reward-weighted) vs the undistilled
           teacher sampled with LCMScheduler: masked PSNR, gain kept, success, discriminator score
  memory   DPO step peak memory and time, reference = adapters disabled vs a frozen UNet copy
  speed    4-step LCM vs 50-step Euler generation time per image
The slow tests in tests/preference/ call the same functions and assert the issue's bars.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from rorem_core.config import stage_config
from rorem_core.data.formats import read_candidates, read_triplets, write_candidates
from rorem_core.data.images import load_mask, load_rgb, save_png
from rorem_core.evaluation.metrics import masked_psnr, proportion_ci95

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:   # run as a script: the repo root for `tests.helpers`
    sys.path.insert(0, str(REPO))


@dataclass
class Bench:
    """An experiment folder next to a bootstrapped workspace (params dict + model dir)."""

    root: Path
    params: dict
    model_dir: Path
    data: Path       # the workspace's data folder (seed triplets)

    def cfg(self, stage: str, **overrides):
        import rorem_core.preference.distill  # noqa: F401  (registers the preference stages)
        import rorem_core.preference.dpo  # noqa: F401
        import rorem_core.preference.pairs  # noqa: F401

        return stage_config(stage, self.params, overrides)



def _common():
    """benchmarks.common, imported once the repo root is on sys.path (these files also run as scripts)."""
    from benchmarks import common

    return common

def workspace(path: Path | None, out: Path) -> Bench:
    """Use a bootstrapped workspace (params.yaml + models/base), or bootstrap one under ``out``."""
    if path is None:
        path = out / "ws"
        _common().tiny_workspace(path, n_seed=400, n_test=200, pool_size=40, n_pools=2)
    params = yaml.safe_load((path / "params.yaml").read_text())
    out.mkdir(parents=True, exist_ok=True)
    return Bench(root=out, params=params, model_dir=path / "models" / "base", data=path / "data")


# ---------------------------------------------------------------- data and scoring


def make_data(b: Bench, round_id: int, pool_size: int, n_test: int) -> tuple[Path, Path, Path]:
    """A pool (+ hidden GT) of ``pool_size`` inputs and a test split of ``n_test`` triplets."""
    from rorem_core.data.synthetic import SyntheticConfig, write_pool, write_triplets

    syn = SyntheticConfig(**{**b.params["bootstrap"]["synthetic"], "pool_size": pool_size})
    pool, hidden = b.root / f"pool-{round_id}-n{pool_size}", b.root / f"hidden-{round_id}-n{pool_size}"
    test = b.root / f"test-{n_test}"
    if not (pool / "meta.json").is_file():
        write_pool(pool, hidden, syn, round_id)
    if not (test / "meta.json").is_file():
        write_triplets(test, syn, "test", n_test, syn.test_hard_fraction)
    return pool, hidden, test


def oracle_score(psnr_db: float, scale_db: float = 2.0) -> float:
    """Simulated discriminator: P(good) = sigmoid((masked PSNR - 20 dB) / scale)."""
    return 1.0 / (1.0 + math.exp(-(psnr_db - 20.0) / scale_db))


def candidates(b: Bench, remover: Path, pool: Path, hidden: Path, round_id: int, k: int, steps: int) -> Path:
    """K Euler candidates per pool input, with oracle scores in the manifest's ``score`` field."""
    from rorem_core.stages import generate

    out = b.root / f"cands-{pool.name}-{remover.name}-k{k}-s{steps}"
    manifest = out / "candidates.json"
    if manifest.is_file():
        return manifest
    generate.run(b.cfg("generate", num_seeds=k, steps=steps, batch_size=256), remover, pool, out, round_id)
    gts = {h["id"]: hidden / h["GT"] for h in json.loads((hidden / "meta.json").read_text())}
    psnr = {c.id: masked_psnr(load_rgb(out / c.result), load_rgb(gts[c.input_id]), load_mask(out / c.mask))
            for c in read_candidates(manifest)}
    scored = [c.model_copy(update={"score": oracle_score(psnr[c.id]), "score_model": "oracle"})
              for c in read_candidates(manifest)]
    write_candidates(manifest, scored)
    return manifest


def discriminator(b: Bench, manifests: list[Path], hiddens: list[Path], steps: int = 600, lr: float = 1e-3,
                  mode: str = "lora") -> Path | None:
    """A discriminator trained on oracle labels of the candidates (the project's own stage)."""
    try:
        from rorem_core.stages import train_discriminator
        from tests.helpers.oracle_labels import build_oracle_labels
    except ImportError:
        return None
    out = b.root / f"discriminator-{mode}-{steps}-{lr:g}-{manifests[0].parent.name}"
    if not (out / "discriminator.json").is_file():
        labels = []
        for i, (m, h) in enumerate(zip(manifests, hiddens)):
            build_oracle_labels(m, h, b.root / f"labels-{i}")
            labels.append(b.root / f"labels-{i}" / "meta.json")
        cfg = b.cfg("train_discriminator", steps=steps, lr=lr, mode=mode, batch_size=32, log_every=50,
                    lr_warmup_steps=20, checkpoint_every=10_000)
        train_discriminator.run(cfg, b.model_dir, labels, out)
    return out


def evaluate(b: Bench, remover: Path, test: Path, *, steps: int, scheduler: str = "euler",
             disc: Path | None = None, name: str | None = None) -> dict:
    """Per-image oracle (masked PSNR >= 20 dB) and discriminator judgements on the test split; the
    same seed per image for every remover, so two removers can be compared pairwise."""
    from rorem_core.data.latents import image_to_tensor, mask_to_tensor
    from rorem_core.models.remover import Remover, composite

    res, meta = b.params["base"]["resolution"], test / "meta.json"
    entries = read_triplets(meta)
    model = Remover.load(remover, cache_dir=b.params["base"]["cache_dir"], resolution=res)
    out_dir = b.root / "eval" / (name or f"{remover.name}-{scheduler}{steps}")
    rows, t0 = [], time.perf_counter()
    for lo in range(0, len(entries), 100):
        chunk = entries[lo:lo + 100]
        src = torch.stack([image_to_tensor(load_rgb(test / e.source), res) for e in chunk])
        msk = torch.stack([mask_to_tensor(load_mask(test / e.mask), res) for e in chunk])
        out = composite(model.remove(src, msk, [1234 + lo + i for i in range(len(chunk))], steps=steps,
                                     scheduler=scheduler, batch_size=100), src, msk)
        for i, e in enumerate(chunk):
            img = ((out[i].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)
            save_png(out_dir / f"{e.id}.png", img)
            rows.append({"id": e.id, "psnr": masked_psnr(img, load_rgb(test / e.GT), load_mask(test / e.mask))})
    seconds = time.perf_counter() - t0
    scores = None
    if disc is not None:
        from rorem_core.config import BaseConfig
        from rorem_core.reward.selection import Scorer

        scorer = Scorer.load(disc, BaseConfig(**b.params["base"]), batch_size=100)
        scores = scorer.score_files([(test / e.source, test / e.mask, out_dir / f"{e.id}.png") for e in entries])
        thr = scorer.threshold
    psnr = np.array([r["psnr"] for r in rows])
    ok = psnr >= 20.0
    out = {"n": len(rows), "masked_psnr": float(psnr.mean()), "success": ok.tolist(), "success_rate": float(ok.mean()),
           "success_ci95": proportion_ci95(int(ok.sum()), len(ok)), "seconds": seconds, "psnr": psnr.tolist()}
    if scores is not None:
        good = scores > thr
        out |= {"disc_score": float(np.mean(scores)), "disc_success": good.tolist(), "disc_rate": float(good.mean()),
                "disc_ci95": proportion_ci95(int(good.sum()), len(good))}
    return out


def leave_object(test: Path) -> float:
    """Mean masked PSNR of leaving the object (the reference for 'gain')."""
    return float(np.mean([masked_psnr(load_rgb(test / e.source), load_rgb(test / e.GT), load_mask(test / e.mask))
                          for e in read_triplets(test / "meta.json")]))


def paired_diff(a: list[bool], b: list[bool]) -> tuple[float, float, float]:
    """Mean of b_i - a_i over images with its normal 95 % interval (paired: same images, same seeds)."""
    d = np.asarray(b, float) - np.asarray(a, float)
    half = 1.959963984540054 * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("inf")
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def _line(name: str, r: dict, leave: float | None = None) -> str:
    lo, hi = r["success_ci95"]
    s = f"{name:<28}{r['masked_psnr']:>8.2f} dB"
    s += f" ({r['masked_psnr'] - leave:+.2f})" if leave is not None else ""
    s += f"  oracle SR {100 * r['success_rate']:5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
    if "disc_rate" in r:
        lo, hi = r["disc_ci95"]
        s += f"  disc SR {100 * r['disc_rate']:5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] score {r['disc_score']:.3f}"
    return s + f"  {1000 * r['seconds'] / r['n']:.1f} ms/img"


# ---------------------------------------------------------------- experiments

DPO_DEFAULTS = dict(steps=200, batch_size=16, lr=1e-4, beta=5000.0, lora_rank=8, val_fraction=0.2,
                    log_every=50, checkpoint_every=10_000)


@contextlib.contextmanager
def timed(phases: dict[str, float], name: str):
    """Adds the block's wall time (s) to ``phases[name]``: where an experiment's time goes."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0


def _print_phases(r: dict) -> None:
    print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in r.get("phases", {}).items()))


def dpo_experiment(b: Bench, *, pool_size: int = 300, k: int = 8, gen_steps: int = 20, n_test: int = 600,
                   eval_steps: int = 50, margin: float = 0.05, with_disc: bool = True, tag: str = "dpo",
                   **overrides) -> dict:
    from rorem_core.stages import build_pairs, train_dpo

    phases: dict[str, float] = {}
    with timed(phases, "data + candidates"):
        pool, hidden, test = make_data(b, 11, pool_size, n_test)
        manifest = candidates(b, b.model_dir, pool, hidden, 11, k, gen_steps)
    pairs_dir = b.root / f"pairs-{manifest.parent.name}-m{margin}"
    pairs = build_pairs.run(b.cfg("build_pairs", margin=margin), pairs_dir, scored=[manifest])
    with timed(phases, "DPO training"):
        trained = train_dpo.run(b.cfg("train_dpo", **{**DPO_DEFAULTS, **overrides}), b.model_dir, b.root / tag,
                                pairs=[pairs_dir])
    with timed(phases, "discriminator"):
        disc = discriminator(b, [manifest], [hidden]) if with_disc else None
    with timed(phases, "evaluation"):
        pre = evaluate(b, b.model_dir, test, steps=eval_steps, disc=disc, name=f"pre-{eval_steps}")
        post = evaluate(b, b.root / tag, test, steps=eval_steps, disc=disc, name=f"{tag}-{eval_steps}")
    out = {"pairs": pairs.model_dump(), "train": trained.model_dump(), "train_seconds": phases["DPO training"],
           "phases": phases, "pre": pre, "post": post, "oracle_diff": paired_diff(pre["success"], post["success"]),
           "psnr_diff": paired_diff(pre["psnr"], post["psnr"])}
    if disc is not None:
        out["disc_diff"] = paired_diff(pre["disc_success"], post["disc_success"])
        out["disc_heldout"] = disc_quality(disc)
    return out


def disc_quality(disc: Path) -> dict:
    """The judge's own held-out accuracy / ROC-AUC on oracle labels (is its success rate meaningful?)."""
    s = json.loads((disc / "train_summary.json").read_text())["metrics"]["heldout"]["all"]
    return {k: s.get(k) for k in ("n", "accuracy", "roc_auc")}


def print_dpo(r: dict) -> None:
    t = r["train"]
    print(f"\n== Diffusion-DPO (tiny, CPU): {r['pairs']['n_pairs']} pairs {r['pairs']['per_rule']}, "
          f"{t['n_train']} train / {t['n_val']} held-out, {t['steps']} steps in {r['train_seconds']:.0f} s")
    print(f"held-out implicit accuracy {t['val_before'].get('implicit_acc', float('nan')):.3f} -> "
          f"{t['val_after'].get('implicit_acc', float('nan')):.3f}  (reward margin "
          f"{t['val_after'].get('reward_margin', float('nan')):+.3f}); train last: "
          + ", ".join(f"{k} {v:.4g}" for k, v in t["train_last"].items()))
    print(_line("pre-DPO remover", r["pre"]))
    print(_line("DPO remover", r["post"]))
    if "disc_heldout" in r:
        q = r["disc_heldout"]
        print(f"discriminator (trained on oracle labels of the candidates): held-out accuracy {q['accuracy']:.3f}, "
              f"ROC-AUC {q['roc_auc']:.3f} on {q['n']} results")
    for key, label in (("oracle_diff", "oracle SR"), ("disc_diff", "disc SR"), ("psnr_diff", "masked PSNR dB")):
        if key in r:
            m, lo, hi = r[key]
            scale = 1 if key == "psnr_diff" else 100
            print(f"paired difference DPO - pre, {label}: {scale * m:+.2f} [{scale * lo:+.2f}, {scale * hi:+.2f}]")
    _print_phases(r)


# lr 3e-5: at 1e-4 the tiny student drifts (24.1 dB vs 25.6 dB here) and, on a weaker base, collapsed
DISTILL_DEFAULTS = dict(steps=300, batch_size=16, lr=3e-5, lora_rank=16, log_every=50, checkpoint_every=10_000)


def distill_experiment(b: Bench, *, pool_size: int = 400, k: int = 2, gen_steps: int = 20, n_test: int = 400,
                       teacher_steps: int = 50, student_steps: int = 4, reward_mode: str = "softmax",
                       with_disc: bool = True, consistency: bool = True, **overrides) -> dict:
    """Plain vs reward-weighted distillation on the same data: seed GT triplets + scored candidates.
    ``consistency``: also the undistilled teacher under the LCM scheduler and the one-step agreements
    (what the benchmark reports beside the bar; the learning test skips them)."""
    from rorem_core.stages import distill

    phases: dict[str, float] = {}
    with timed(phases, "data + candidates"):
        pool, hidden, test = make_data(b, 12, pool_size, n_test)
        manifest = candidates(b, b.model_dir, pool, hidden, 12, k, gen_steps)
    train = [b.data / "seed"]
    with timed(phases, "discriminator"):
        disc = discriminator(b, [manifest], [hidden]) if with_disc else None
    students, seconds = {}, {}
    for mode in ("none", reward_mode):
        out = b.root / f"lcm-{mode}"
        cfg = b.cfg("distill", **{**DISTILL_DEFAULTS, "reward_mode": mode, **overrides})
        t0 = time.perf_counter()
        if not (out / "rorem_model.json").is_file():
            distill.run(cfg, b.model_dir, out, train=train, candidates=[manifest])
        seconds[mode] = time.perf_counter() - t0
        with timed(phases, "evaluation"):
            students[mode] = evaluate(b, out, test, steps=student_steps, scheduler="lcm", disc=disc, name=f"lcm-{mode}")
    phases["distillation"] = sum(seconds.values())
    with timed(phases, "evaluation"):
        teacher = evaluate(b, b.model_dir, test, steps=teacher_steps, disc=disc, name="teacher")
    r = {"leave": leave_object(test), "train_seconds": seconds, "phases": phases, "teacher": teacher,
         "plain": students["none"], "rwd": students[reward_mode], "reward_mode": reward_mode,
         "rwd_vs_plain": paired_diff(students["none"]["success"], students[reward_mode]["success"])}
    if consistency:
        with timed(phases, "consistency"):
            r["teacher_lcm"] = evaluate(b, b.model_dir, test, steps=student_steps, scheduler="lcm", disc=disc,
                                        name="teacher-lcm")
            # ONE student step from pure noise vs the teacher's 50-step ODE solution from the same noise
            # (the property distillation trains); the undistilled model's one step is its x0 guess
            r["one_step_agreement_db"] = {}
            for name, ref in (("undistilled", b.model_dir), ("plain", b.root / "lcm-none"),
                              (reward_mode, b.root / f"lcm-{reward_mode}")):
                evaluate(b, ref, test, steps=1, scheduler="lcm", name=f"one-step-{name}")
                r["one_step_agreement_db"][name] = agreement(b, f"one-step-{name}", "teacher", test)
    return r


def agreement(b: Bench, name_a: str, name_b: str, test: Path) -> float:
    """Mean masked PSNR (dB) between two evaluations' result images (same test images and seeds)."""
    ev = b.root / "eval"
    return float(np.mean([masked_psnr(load_rgb(ev / name_a / f"{e.id}.png"), load_rgb(ev / name_b / f"{e.id}.png"),
                                      load_mask(test / e.mask)) for e in read_triplets(test / "meta.json")]))


def gain_kept(r: dict, key: str) -> float:
    return (r[key]["masked_psnr"] - r["leave"]) / (r["teacher"]["masked_psnr"] - r["leave"])


def print_distill(r: dict) -> None:
    print(f"\n== LCM distillation (tiny, CPU): leave-the-object {r['leave']:.2f} dB; training s "
          + ", ".join(f"{k} {v:.0f}" for k, v in r["train_seconds"].items()))
    for key, label in (("teacher", "teacher Euler 50"), ("teacher_lcm", "teacher, LCM 4 (no distill)"),
                       ("plain", "student LCM 4, plain"), ("rwd", f"student LCM 4, RWD {r['reward_mode']}")):
        if key in r:
            kept = "" if key == "teacher" else f"  gain kept {100 * gain_kept(r, key):.0f}%"
            print(_line(label, r[key], r["leave"]) + kept)
    m, lo, hi = r["rwd_vs_plain"]
    print(f"paired difference RWD - plain, oracle SR: {100 * m:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]")
    if "one_step_agreement_db" in r:
        print("1 LCM step vs the teacher's 50-step result from the same noise (masked PSNR, higher = more "
              "consistent): " + ", ".join(f"{k} {v:.2f} dB" for k, v in r["one_step_agreement_db"].items()))
    _print_phases(r)


# ---------------------------------------------------------------- benchmarks: memory, time


def probe_dpo_step(reference: str, channels: list[int], batch: int, latent: int, steps: int) -> dict:
    """One process, one variant: peak RSS and time per DPO step of a random UNet of ``channels``.
    Run in a fresh subprocess per variant (``--probe``) so peak RSS is not shared."""
    import copy
    import resource

    from diffusers import UNet2DConditionModel

    from rorem_core.config import TrainDPOConfig
    from rorem_core.models.conditioning import PromptEmbeds
    from rorem_core.models.tiny import TinyPresetConfig, _unet_config, scheduler_config
    from rorem_core.models.unet import add_lora
    from rorem_core.preference.dpo import StepContext, adapters_disabled, frozen_copy, make_preference_loss

    base_mb = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20
    torch.manual_seed(0)
    tiny = TinyPresetConfig(unet_channels=channels)
    unet = UNet2DConditionModel(**_unet_config(tiny, latent))
    ref = frozen_copy(copy.deepcopy(unet).requires_grad_(False)) if reference == "copy" else adapters_disabled
    trainable = add_lora(unet, 8)
    cond = PromptEmbeds(hidden=torch.randn(1, 77, 2 * tiny.text_hidden), pooled=torch.randn(1, tiny.text_hidden))
    ctx = StepContext.from_scheduler(scheduler_config("v_prediction"), cond, latent * 4, "cpu")
    cfg = TrainDPOConfig(base={}, augment_dihedral=False)
    loss_fn = make_preference_loss(unet, ctx, cfg, reference=ref)
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    z = lambda c: torch.randn(batch, c, latent, latent)  # noqa: E731
    data = {"w": z(4), "l": z(4), "masked": z(4), "mask": (z(1) > 0).float()}
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss, _ = loss_fn(data, torch.Generator().manual_seed(i))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    params_mb = sum(p.numel() * p.element_size() for p in unet.parameters()) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"reference": reference, "peak_rss_mb": peak, "peak_above_imports_mb": peak - base_mb,
            "step_ms": 1000 * float(np.median(times[1:])), "unet_params_mb": params_mb}


def bench_memory(configs=((([32, 64, 64]), 16, 16), ([128, 256, 512], 4, 16)), steps: int = 10,
                 threads: int = 1) -> list[dict]:
    import subprocess
    import sys

    rows = []
    for channels, batch, latent in configs:
        for ref in ("adapter", "copy"):
            cmd = [sys.executable, __file__, "--probe", ref, "--channels", ",".join(map(str, channels)),
                   "--batch", str(batch), "--latent", str(latent), "--steps", str(steps), "--threads", str(threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            rows.append({"channels": channels, "batch": batch, **json.loads(out)})
    return rows


def print_memory(rows: list[dict]) -> None:
    print("\n== DPO step: reference = adapters disabled vs a frozen UNet copy (CPU, fresh process each)")
    for a, c in zip(rows[::2], rows[1::2]):
        pa, pc = a["peak_above_imports_mb"], c["peak_above_imports_mb"]
        print(f"UNet {a['channels']} ({a['unet_params_mb']:.0f} MB fp32), batch {a['batch']} pairs: peak RSS above "
              f"imports {pa:.0f} vs {pc:.0f} MB (copy/adapter {pc / pa:.2f}x; totals {a['peak_rss_mb']:.0f} vs "
              f"{c['peak_rss_mb']:.0f} MB);"
              f" step {a['step_ms']:.0f} vs {c['step_ms']:.0f} ms (copy/adapter {c['step_ms'] / a['step_ms']:.2f}x)")


def bench_speed(b: Bench, student: Path | None, n: int = 64, repeats: int = 3) -> dict:
    """Generation time per image: 50-step Euler (teacher) vs 4-step LCM (student), same batch."""
    from rorem_core.models.remover import Remover

    res = b.params["base"]["resolution"]
    src, msk = torch.rand(n, 3, res, res) * 2 - 1, torch.zeros(n, 1, res, res)
    msk[..., res // 4: res // 2, res // 4: res // 2] = 1
    out = {}
    for name, ref, sched, steps in (("euler50", b.model_dir, "euler", 50), ("lcm4", student or b.model_dir, "lcm", 4)):
        model = Remover.load(ref, cache_dir=b.params["base"]["cache_dir"], resolution=res)
        model.remove(src[:2], msk[:2], [0, 1], steps=steps, scheduler=sched)  # warm-up
        t = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.remove(src, msk, list(range(n)), steps=steps, scheduler=sched, batch_size=n)
            t.append((time.perf_counter() - t0) / n)
        out[name] = 1000 * min(t)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["dpo", "distill", "memory", "speed", "all"], default="all")
    p.add_argument("--workspace", type=Path, help="a bootstrapped workspace (params.yaml, models/base, data/)")
    p.add_argument("--out", type=Path, default=REPO / ".rorem" / "bench_preference")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--probe", choices=["adapter", "copy"], help=argparse.SUPPRESS)
    p.add_argument("--channels", default="32,64,64", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=16, help=argparse.SUPPRESS)
    p.add_argument("--latent", type=int, default=16, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=5, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.probe:
        print(json.dumps(probe_dpo_step(a.probe, [int(c) for c in a.channels.split(",")], a.batch, a.latent, a.steps)))
        return 0
    if a.part in ("memory", "all"):
        print_memory(bench_memory(threads=a.threads or 1))
    if a.part == "memory":
        return 0
    b = workspace(a.workspace, a.out)
    if a.part in ("dpo", "all"):
        print_dpo(dpo_experiment(b))
    if a.part in ("distill", "all"):
        print_distill(distill_experiment(b))
    if a.part in ("speed", "all"):
        student = b.root / "lcm-none"
        r = bench_speed(b, student if (student / "rorem_model.json").is_file() else None)
        print(f"\n== generation time per image (batch 64, CPU): Euler 50 steps {r['euler50']:.1f} ms, "
              f"LCM 4 steps {r['lcm4']:.1f} ms ({r['euler50'] / r['lcm4']:.1f}x faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
