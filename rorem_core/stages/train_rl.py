"""Stage 10c, train_rl: online RL on the round's remover (a LoRA; reference = adapters disabled).
Rollouts: K samples per pool input (and per chosen seed input, train_rl.seed_inputs) from a stochastic
DDIM sampler with per-step log-probs, scored by a reward model (the round's discriminator, or the oracle
on synthetic data); losses ppo (DDPO) or reinforce (group baseline), optional KL to the reference. The
guard reports the held-out pool reward and the test split's oracle success / masked PSNR before and
after (paired 95 % intervals) and stops early on a held-out plateau or a KL budget. Output: a remover
dir like train_dpo's (docs/rl.md). Runs under N data-parallel processes like the other training stages
(rollouts sampled by all, rl/ddpo.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

from rorem_core import contract
from rorem_core.config import TrainRLConfig
from rorem_core.data.formats import dataset_file
from rorem_core.device import resolve_device
from rorem_core.evaluation.metrics import paired_ci95
from rorem_core.evaluation.no_gt import has_gt
from rorem_core.io import atomic_dir, write_json_atomic
from rorem_core.models.conditioning import load_prompt_embeds
from rorem_core.models.loading import load_scheduler_config, load_vae, masked_fill_of
from rorem_core.preference.dpo import LoraPolicy, StepContext, history_tail, save_lora_remover
from rorem_core.rl.ddpo import OnlineRL
from rorem_core.rl.rewards import load_reward
from rorem_core.rl.rollout import (
    Inputs,
    Sampling,
    load_pool_inputs,
    load_test_inputs,
    load_triplet_inputs,
    pick_seed_triplets,
    split_heldout,
    test_oracle,
    trajectory_bytes,
    with_seed_inputs,
)
from rorem_core.rl.sampler import DDIMSchedule
from rorem_core.stages import _cli
from rorem_core.training.trainer import run_training

SKIPPED = "skipped.json"


class TrainRLResult(BaseModel):
    out_dir: str
    enabled: bool = True
    loss: str = ""
    reward: str = ""
    steps: int = 0
    resumed_from: int = 0
    rollouts: int = 0
    stopped_early: str | None = None
    n_rollout_inputs: int = 0      # pool inputs not held out + seed inputs
    n_seed_inputs: int = 0
    n_heldout: int = 0
    trajectory_bytes_per_sample: int = 0   # stored per rollout sample (latents, log-probs, indices)
    heldout_reward: dict = {}      # paired_ci95 over held-out pool inputs (reward of one fixed-seed sample)
    test_success: dict = {}        # paired_ci95 over test images (oracle success 0/1, RL sampler)
    test_masked_psnr: dict = {}    # paired_ci95 over test images (dB)
    test_judged_success: dict = {}  # paired_ci95 over test images (the judge's verdict 0/1, docs/judge.md)
    train_last: dict = {}
    per_rollout: dict = {}         # rollout -> reward mean / spread, held-out reward, approx-KL, clip fraction, KL ref
    first_loss: float = float("nan")
    last_loss: float = float("nan")


def run(cfg: TrainRLConfig, init: Path, pool: Path, out_dir: Path, *, discriminator: Path | None = None,
        hidden: Path | None = None, test: Path | None = None, seed: Path | None = None,
        round_id: int = 1) -> TrainRLResult:
    if not cfg.enabled:
        with atomic_dir(out_dir) as tmp:
            write_json_atomic(tmp / SKIPPED, {"train_rl": "disabled (train_rl.enabled: false)"})
        return TrainRLResult(out_dir=str(out_dir), enabled=False)
    res = cfg.base.resolution
    seed_meta, seed_ids, seed_ts = pick_seed_triplets(seed, cfg.seed_inputs, cfg.base.seed)  # refusals first
    vae = load_vae(init)
    fill = masked_fill_of(init)     # what the remover sees in the hole, as it was trained
    inputs, roll, held, seed_gt = rollout_inputs(cfg, pool, vae, seed_meta, seed_ids, seed_ts, fill)
    # the reward model is checked (registered name, base = the remover's, files present) before any rollout
    reward = load_reward(cfg.reward, discriminator=discriminator, hidden=hidden, remover=init,
                         cache_dir=cfg.base.cache_dir, resolution=res, device=resolve_device(cfg.base.device),
                         success_db=cfg.success_db, seed_gt=seed_gt)
    # the seed split keys the work dir only when it is used: seed_inputs 0 resumes the runs it did before
    seed_key = (f"seed={seed}",) if seed_ids else ()
    pol = LoraPolicy.setup(cfg, init, f"train_rl/round-{round_id}", str(pool), str(discriminator), str(hidden), str(test),
                           *seed_key)
    ctx = StepContext.from_scheduler(load_scheduler_config(init), load_prompt_embeds(init, cfg.base.cache_dir), res,
                                     pol.device)
    smp = Sampling(cond=ctx.cond, sched=DDIMSchedule.make(ctx.alphas_cumprod, cfg.sampler_steps, ctx.prediction_type),
                   alphas_cumprod=ctx.alphas_cumprod, eta=cfg.eta, vae=vae.to(pol.device), resolution=res,
                   device=pol.device, batch_size=cfg.sample_batch_size)
    rl = OnlineRL(cfg, pol.unet, smp, inputs, roll, held, reward, pol.work)
    # the guard needs GT; an imported test split of photos has none (then the report says n/a)
    test_in = (load_test_inputs(test, vae, res, cfg.test_images, fill)
               if test and has_gt(dataset_file(test)) else None)
    unet = pol.unet.eval()
    before = test_oracle(unet, smp, test_in, cfg.base.seed, cfg.success_db) if test_in else None
    held_before = rl.heldout(0)
    result, unet = run_training(base=cfg.base, params=cfg, model=pol.unet, trainable=pol.trainable, entries=rl.entries,
                                compute_loss=rl.compute_loss, work_dir=pol.work, run_name=pol.run_name,
                                tracker_config=cfg.model_dump(), wandb_group=f"round-{round_id}", accelerator=pol.acc,
                                batch_fn=rl.batch_fn, before_batch=rl.before_batch, should_stop=rl.should_stop)
    rl.finish(result.steps)
    unet.eval()
    held_after = rl.heldout_now()
    after = test_oracle(unet, smp, test_in, cfg.base.seed, cfg.success_db) if test_in else None
    out = TrainRLResult(
        out_dir=str(out_dir), loss=cfg.loss, reward=cfg.reward, steps=result.steps, resumed_from=result.resumed_from,
        rollouts=rl.epoch + 1, stopped_early=rl.stop_reason, n_rollout_inputs=len(roll), n_seed_inputs=len(seed_ids),
        n_heldout=len(held),
        trajectory_bytes_per_sample=trajectory_bytes(rl.rollout) if rl.rollout else 0,
        heldout_reward=paired_ci95(held_before, held_after),
        test_success=paired_ci95(before["success"], after["success"]) if before else {},
        test_masked_psnr=paired_ci95(before["masked_psnr"], after["masked_psnr"]) if before else {},
        test_judged_success=paired_ci95(before["judged"], after["judged"]) if before else {},
        train_last=history_tail(result.history), per_rollout=summarise_history(result.history),
        first_loss=result.first_loss, last_loss=result.last_loss)
    if pol.acc.is_main_process:
        with atomic_dir(out_dir) as tmp:
            save_lora_remover(unet, init, tmp, {**out.model_dump(), "losses": result.losses,
                                                           "history": result.history, "config": cfg.model_dump()})
    return out


def rollout_inputs(cfg: TrainRLConfig, pool: Path, vae, seed_meta: Path | None, seed_ids: list[str],
                   seed_ts: list, fill: str = "zero") -> tuple[Inputs, list[int], list[int], dict]:
    """(pool + seed inputs, rollout rows, held-out rows, {seed input id: its GT}). The held-out rows are drawn
    from the pool alone (the guard measures the pool's distribution); the seed inputs join the rollout rows."""
    res = cfg.base.resolution
    inputs = load_pool_inputs(pool, vae, res, fill)          # refuses an empty pool, before anything is loaded
    if len(inputs) < 2:
        raise ValueError(f"train_rl: the pool {pool} has {len(inputs)} input; the held-out guard needs >= 2")
    roll, held = split_heldout(inputs.ids, cfg.heldout_fraction, cfg.base.seed, cfg.heldout_max)
    seed_in = load_triplet_inputs(seed_meta, seed_ids, seed_ts, vae, res, fill) if seed_ids else None
    inputs, roll = with_seed_inputs(inputs, roll, seed_in)
    return inputs, roll, held, dict(zip(seed_ids, seed_in.gt)) if seed_in else {}


def summarise_history(history: list[dict]) -> dict:
    """Per rollout: mean reward, spread, held-out reward, approx-KL, clip fraction, KL to the reference."""
    keys = ("reward_mean", "reward_std", "heldout_reward", "approx_kl", "clipfrac", "kl_ref")
    rows = {}
    for h in history:
        rows.setdefault(int(h.get("rollout", 0)), []).append(h)
    return {str(e): {k: float(np.mean([r[k] for r in rs])) for k in keys if k in rs[0]} for e, rs in rows.items()}


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("train_rl", __doc__)
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--init", type=Path, required=True, help="the remover to improve (reference = it)")
    p.add_argument("--pool", type=Path, required=True, help="the round's pool (rollout + held-out inputs)")
    p.add_argument("--discriminator", type=Path, help="reward=discriminator: the round's discriminator")
    p.add_argument("--hidden", type=Path, help="reward=oracle: the pool's hidden ground truth (synthetic data)")
    p.add_argument("--test", type=Path, help="test split for the oracle before/after (the guard)")
    p.add_argument("--seed", type=Path, help="the seed split: train_rl.seed_inputs of its triplets join the rollouts")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metrics", type=Path)
    args = p.parse_args(argv)

    def body(cfg):
        # reward=oracle on synthetic pools: the hidden GT sits where the round contract puts it (not a DVC dep:
        # the oracle is an upper-bound ablation; pools without GT, e.g. imported photos, have none)
        hidden = args.hidden or (Path(contract.hidden_for_pool(str(args.pool))) if cfg.reward == "oracle" else None)
        res = run(cfg, args.init, args.pool, args.out, discriminator=args.discriminator, hidden=hidden,
                  test=args.test, seed=args.seed, round_id=args.round)
        _cli.write_metrics(args.metrics, res.model_dump())
        return res

    return _cli.run_main("train_rl", args, body)


if __name__ == "__main__":
    raise SystemExit(main())
