"""The online-RL training loop on top of the shared trainer: rollouts with the current LoRA policy,
group advantages, PPO / REINFORCE steps on stored transitions, and the reward-hacking guard.

One optimiser step trains on ``batch_size x grad_accum x N`` transitions (N data-parallel processes) of
the current rollout. A rollout = ``inputs_per_epoch`` rollout inputs x K samples, trained on
``timestep_fraction`` of each chain's steps for ``inner_epochs`` passes; then a new rollout is sampled
with the updated weights. The schedule counts GLOBAL micro-batches (the trainer's ``BatchPlan``: process
r's k-th micro-batch is global micro-batch k N + r), so it is the same for every N:

    micro-batches per rollout  M = inner_epochs * ceil(G K S_train / batch_size)
    rollout of micro-batch g   e = g // M

The trainer calls ``before_batch(g)``: every rollout that the current optimiser step trains on, on any
process, is sampled at the step's start by all processes together (each samples its blocks, all gather
the full rollout: ``Sampling.sample``), with the weights of that moment: exactly what one process with
``grad_accum x N`` micro-steps does, since weights change only at the step's end. Every process then
holds the whole rollout, so the group advantages (per input, over its K samples) are computed over
whole groups, and each process trains on its own global micro-batches of transitions (DDP all-reduces
the gradients). A resumed run reloads rollouts from the work dir (written by the main process).

``should_stop(step, history)`` at rollout boundaries: stop when the held-out reward (fixed seeds,
inputs never rolled out) has not beaten its best for ``patience`` rollouts, or when the mean per-step
KL to the reference over the last rollout exceeds ``kl_budget``; the main process decides and every
process follows. The reference is the same UNet with its adapters disabled
(``preference.dpo.adapters_disabled``), never a second copy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from rorem_core.io import write_json_atomic
from rorem_core.parallel import shards
from rorem_core.preference.dpo import Reference, adapters_disabled
from rorem_core.rl.rewards import RewardModel
from rorem_core.rl.rollout import Inputs, Sampling, collect_rollout, heldout_rewards, load_rollout, save_rollout
from rorem_core.rl.sampler import transition_log_prob
from rorem_core.training.losses import gaussian_kl_same_std, get_loss


def step_rollouts(g: int, per_step: int, per_rollout: int) -> range:
    """The rollouts that the optimiser step of global micro-batch ``g`` trains on, on any process: a step
    is ``per_step`` consecutive global micro-batches, a rollout ``per_rollout`` of them (module doc)."""
    first = g - g % per_step
    return range(first // per_rollout, (first + per_step - 1) // per_rollout + 1)


class OnlineRL:
    """The trainer hooks and loss of one train_rl run (module doc). ``unet`` carries the LoRA."""

    def __init__(self, cfg, unet, smp: Sampling, inputs: Inputs, rollout_rows: Sequence[int],
                 heldout_rows: Sequence[int], reward: RewardModel, work: Path, reference: Reference = adapters_disabled):
        self.reference = reference   # tests pass preference.dpo.frozen_copy(a separate UNet) to compare
        self.cfg, self.unet, self.smp, self.inputs, self.reward = cfg, unet, smp, inputs, reward
        self.rollout_rows, self.heldout_rows = list(rollout_rows), list(heldout_rows)
        self.work = work / "rollouts"
        self.sh = shards()           # this process among the data-parallel ones (one process: Shards())
        self.g = min(cfg.inputs_per_epoch, len(self.rollout_rows))
        self.n_steps = len(smp.sched.timesteps)
        self.s_train = max(1, round(cfg.timestep_fraction * self.n_steps))
        self.n_transitions = self.g * cfg.num_samples * self.s_train
        self.micro_per_rollout = cfg.inner_epochs * math.ceil(self.n_transitions / cfg.batch_size)
        self.per_step = cfg.grad_accum * self.sh.world     # global micro-batches per optimiser step
        self.loss_fn = get_loss(cfg.loss)
        self.with_kl = cfg.kl_coef > 0 or cfg.kl_budget is not None
        self.epoch, self.rollout, self.extra = -1, None, {}
        self.rollouts: dict[int, tuple[dict, dict]] = {}   # epoch -> (rollout, extra): the current step's
        self.held: dict[int, list[float]] = {}              # epoch -> held-out rewards at its start
        self.stop_reason: str | None = None

    # ------------------------------------------------------------ rollouts and held-out reward

    @property
    def entries(self) -> list[int]:
        return list(range(self.n_transitions))

    @staticmethod
    def batch_fn(entries: list[int]) -> dict:
        return {"idx": torch.as_tensor(entries, dtype=torch.long)}

    def on_disk(self, path: Path) -> bool:
        """Whether an earlier (killed) run left ``path``. Sampling is collective, so every process must take
        the same branch: they look together, and processes that see different files cannot go on."""
        seen = self.sh.gather(path.is_file())
        if len(set(seen)) > 1:
            raise RuntimeError(f"train_rl: {path} exists for process(es) {[r for r, s in enumerate(seen) if s]} of "
                               f"{len(seen)} only: the processes do not share the work dir; set base.work_dir to one "
                               "folder every process (and machine) sees")
        return seen[0]

    def heldout(self, epoch: int) -> list[float]:
        """Held-out rewards of the weights at the start of rollout ``epoch`` (kept, and cached in the work dir)."""
        if epoch in self.held:
            return self.held[epoch]
        path = self.work / f"heldout-{epoch}.json"
        if self.on_disk(path):
            vals = json.loads(path.read_text())
        else:
            self.unet.eval()
            vals = heldout_rewards(self.unet, self.smp, self.inputs, self.heldout_rows, self.reward,
                                   self.cfg.base.seed).tolist()
            self.unet.train()
            if self.sh.main:
                write_json_atomic(path, vals)
        self.held[epoch] = vals
        return vals

    def _chosen(self, epoch: int) -> list[int]:
        rng = np.random.default_rng([self.cfg.base.seed, 5, epoch])
        return sorted(rng.choice(self.rollout_rows, size=self.g, replace=False).tolist())

    def before_batch(self, g: int) -> None:
        """Before global micro-batch ``g``: its step's rollouts are sampled (or reloaded) now, together by all
        processes and with the weights at the step's start (module doc); ``g`` then trains on its own."""
        needed = step_rollouts(g, self.per_step, self.micro_per_rollout)
        for e in needed:
            if e not in self.rollouts:
                self.rollouts[e] = self._rollout(e)
        for e in [e for e in self.rollouts if e < needed.start]:   # trained on: free its trajectories
            del self.rollouts[e]
        self.epoch = g // self.micro_per_rollout
        self.rollout, self.extra = self.rollouts[self.epoch]

    def _rollout(self, epoch: int) -> tuple[dict, dict]:
        path = self.work / f"rollout-{epoch}.safetensors"
        if self.on_disk(path):     # a resumed run: the weights that sampled it are gone
            return load_rollout(path)
        held = self.heldout(epoch)
        self.unet.eval()
        ro = collect_rollout(self.unet, self.smp, self.inputs, self._chosen(epoch), self.cfg.num_samples,
                             self.reward, seed=self.cfg.base.seed, epoch=epoch, n_train_steps=self.s_train,
                             adv_clip=self.cfg.adv_clip)
        self.unet.train()
        extra = {**ro.pop("metrics"), "heldout_reward": float(np.mean(held)) if held else float("nan"), "rollout": epoch}
        if self.sh.main:            # every process holds the same rollout; one file
            save_rollout(path, ro, extra)
        return ro, extra

    def finish(self, steps: int) -> None:
        """After ``steps`` optimiser steps: the last step's rollout in memory (for the summary; a run resumed
        at its last checkpoint trained nothing here and reloads it)."""
        if steps:
            self.before_batch(steps * self.per_step - 1)

    # ------------------------------------------------------------ the loss

    def compute_loss(self, batch: dict, gen: torch.Generator, model=None):
        ro, idx = self.rollout, batch["idx"]
        sample, which = idx // self.s_train, idx % self.s_train
        step = ro["steps"][sample, which]
        dev = self.smp.device
        x_t, x_prev = ro["latents"][sample, step].to(dev), ro["latents"][sample, step + 1].to(dev)
        cond = self.inputs.cond(ro["input_index"][sample], dev)
        kw = dict(eta=self.cfg.eta, alphas_cumprod=self.smp.alphas_cumprod, resolution=self.smp.resolution)
        lp, mean, std = transition_log_prob(model or self.unet, self.smp.cond, cond, x_t, x_prev, step,
                                            self.smp.sched, **kw)
        kl = None
        if self.with_kl:
            with torch.no_grad(), self.reference(self.unet) as ref:
                _, ref_mean, _ = transition_log_prob(ref, self.smp.cond, cond, x_t, x_prev, step, self.smp.sched, **kw)
            kl = gaussian_kl_same_std(mean, ref_mean, std)
        loss, metrics = self.loss_fn(lp, ro["log_probs"][sample, step].to(dev), ro["advantages"][sample].to(dev),
                                     clip_range=self.cfg.clip_range, kl=kl, kl_coef=self.cfg.kl_coef)
        return loss, {**metrics, **{k: self.extra[k] for k in ("reward_mean", "reward_std", "reward_success",
                                                               "heldout_reward", "rollout")}}

    # ------------------------------------------------------------ early stopping

    def should_stop(self, step: int, history: list[dict]) -> bool:
        """Asked after every optimiser step; decides at rollout boundaries only. The main process decides and
        every process follows: processes that stopped apart would wait for each other's collectives."""
        k = step * self.per_step
        if k % self.micro_per_rollout:
            return False              # only between rollouts
        stop, self.stop_reason = self.sh.gather(self._stop_reason(k // self.micro_per_rollout, history))[0]
        return stop

    def _stop_reason(self, nxt: int, history: list[dict]) -> tuple[bool, str | None]:
        """(stop before rollout ``nxt``?, why)."""
        if self.cfg.kl_budget is not None:
            last = [h["kl_ref"] for h in history if h.get("rollout") == nxt - 1 and "kl_ref" in h]
            if last and float(np.mean(last)) > self.cfg.kl_budget:
                return True, f"kl_budget: mean KL to the reference {np.mean(last):.4g} > {self.cfg.kl_budget}"
        p = self.cfg.patience
        if p and nxt >= p and self.heldout_rows:
            h = [float(np.mean(self.heldout(e))) for e in range(nxt + 1)]   # collective: every process asks
            best_before, recent = max(h[:nxt + 1 - p]), max(h[nxt + 1 - p:])
            if recent <= best_before + self.cfg.min_delta:
                return True, (f"plateau: held-out reward {recent:.4g} over the last {p} rollouts did not beat "
                              f"{best_before:.4g} + {self.cfg.min_delta}")
        return False, None

    def heldout_now(self) -> list[float]:
        """Held-out rewards of the current weights (after training; not cached)."""
        if not self.heldout_rows:
            return []
        self.unet.eval()
        return heldout_rewards(self.unet, self.smp, self.inputs, self.heldout_rows, self.reward,
                               self.cfg.base.seed).tolist()
