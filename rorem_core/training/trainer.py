"""A generic resumable training loop on accelerate, shared by every training stage.

The stage supplies the model, its trainable parameters, the list of latent-cache entries and a
``compute_loss(batch, generator, model) -> (loss, metrics)``, where ``model`` is the one
``accelerator.prepare`` returned: the gradient forward must go through it (DDP registers its
gradient all-reduce in the wrapper's forward; calling the raw module trains each GPU on its own);
this module owns the optimiser, the LR
schedule, gradient accumulation, clipping, checkpoints (model + optimiser + scheduler + RNG via
``accelerator.save_state``), resume after a kill, trackers (wandb offline by default) and the
progress bar. A checkpoint holds only the model's trainable parameters and buffers when some
parameters are frozen (LoRA stages): the frozen ones are rebuilt identically from the stage's init
at resume, and an SDXL UNet would add 10.3 GB per checkpoint (``_trainable_only_checkpoints``).

Determinism without saved RNG streams: micro-batch k's sample indices and its noise generator are
pure functions of (seed, k, process), so a run resumed from step N continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rorem_core.config import BaseConfig, TrainParams
from rorem_core.data.latents import load_batch
from rorem_core.device import accelerate_cpu
from rorem_core.io import file_manifest, manifest_problems, write_json_atomic

log = logging.getLogger(__name__)
LossFn = Callable[[dict, torch.Generator, torch.nn.Module], tuple[torch.Tensor, dict]]
BatchFn = Callable[[list], dict]
_CKPT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainResult:
    steps: int
    resumed_from: int
    losses: list[tuple[int, float]] = field(default_factory=list)   # (step, mean loss over log window)
    # per optimiser step: {"step", "loss", **the loss fn's metrics}, means over grad_accum micro-steps.
    # Kept in every checkpoint, so a resumed run reports what an uninterrupted one does.
    history: list[dict] = field(default_factory=list)
    fixed_loss: tuple[float, float] | None = None   # optional (before, after) on a fixed set, set by stages

    @property
    def first_loss(self) -> float:
        return self.losses[0][1] if self.losses else float("nan")

    @property
    def last_loss(self) -> float:
        return self.losses[-1][1] if self.losses else float("nan")


class BatchPlan:
    """Deterministic epoch-shuffled micro-batches; the last batch of an epoch may be smaller."""

    def __init__(self, entries: Sequence, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 batch_fn: BatchFn | None = None):
        if not entries:
            raise ValueError("no training entries: the training set is empty")
        self.entries, self.bs, self.seed, self.rank, self.world = list(entries), batch_size, seed, rank, world
        self.per_epoch = math.ceil(len(self.entries) / batch_size)
        # entries are latent-cache paths by default; a stage with other entries (pairs, labelled
        # samples) passes its own loader: batch_fn(list of entries) -> dict of tensors
        self.batch_fn = batch_fn or load_batch

    def indices(self, k: int) -> np.ndarray:
        """Indices of global micro-batch ``k`` for this process."""
        g = k * self.world + self.rank
        epoch, pos = divmod(g, self.per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.entries))
        return perm[pos * self.bs:(pos + 1) * self.bs]

    def batch(self, k: int) -> dict[str, torch.Tensor]:
        return self.batch_fn([self.entries[i] for i in self.indices(k)])

    def generator(self, k: int) -> torch.Generator:
        """Noise of global micro-batch ``k * world + rank``: the batch 2 processes take at one step gets
        the noise one process with grad_accum 2 gives it (with world 1 the seed is the earlier (k, 0) one)."""
        g = k * self.world + self.rank
        return torch.Generator().manual_seed(int(np.random.default_rng([self.seed, 7, g, 0]).integers(2**62)))


def make_accelerator(base: BaseConfig, params: TrainParams, project_dir: Path):
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    log_with = None if base.wandb_mode == "disabled" else "wandb"
    if log_with:
        os.environ.setdefault("WANDB_MODE", base.wandb_mode)
    return Accelerator(mixed_precision=params.mixed_precision, gradient_accumulation_steps=params.grad_accum,
                       log_with=log_with, cpu=accelerate_cpu(base.device),
                       project_config=ProjectConfiguration(project_dir=str(project_dir)))


def make_optimizer(params: TrainParams, trainable: list[torch.nn.Parameter]):
    if params.adam_8bit:
        try:
            import bitsandbytes as bnb
        except ImportError as e:
            raise ImportError("adam_8bit=true needs bitsandbytes: pip install 'rorem-loop[gpu]'") from e
        cls = bnb.optim.AdamW8bit
    else:
        cls = torch.optim.AdamW
    return cls(trainable, lr=params.lr, betas=(0.9, 0.999), weight_decay=params.weight_decay, eps=1e-8)


def checkpoint_problems(ckpt: Path) -> list[str]:
    """Why ``ckpt`` cannot be resumed from ([] = complete): its ``train_state.json`` (written last)
    lists every file's size and sha256, so a truncated or altered file is found before loading."""
    try:
        state = json.loads((ckpt / "train_state.json").read_text())
    except (OSError, ValueError) as e:
        return [f"{ckpt / 'train_state.json'} is unreadable ({e})"]
    if "files" not in state:  # written before manifests existed: nothing to check against
        return []
    return manifest_problems(ckpt, state["files"])


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The newest complete checkpoint. A damaged one is never loaded: it is skipped with a warning
    naming the bad file, and the previous complete one is used (resumed training is a pure function
    of the step, so the final weights are the same; only the skipped steps are recomputed)."""
    found = sorted(((int(m.group(1)), p) for p in ckpt_root.glob("checkpoint-*")
                    if (m := _CKPT.match(p.name)) and (p / "train_state.json").is_file()), reverse=True)
    for _, ckpt in found:
        problems = checkpoint_problems(ckpt)
        if not problems:
            return ckpt
        log.warning("not resuming from damaged checkpoint %s: %s; falling back to the previous complete "
                    "checkpoint (delete %s to silence this; it is replaced when training reaches that step "
                    "again)", ckpt, "; ".join(problems), ckpt)
    return None


def _save_checkpoint(accelerator, ckpt_root: Path, step: int, history: list[dict], keep: int) -> None:
    """save_state into a temp dir, then rename: a kill mid-save leaves no 'checkpoint-N'. The manifest
    of every file (size, sha256) goes into train_state.json, written last."""
    final = ckpt_root / f"checkpoint-{step}"
    tmp = ckpt_root / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every process's files (RNG states) are in tmp before the manifest
    if accelerator.is_main_process:
        write_json_atomic(tmp / "train_state.json", {"step": step, "history": history,
                                                     "files": file_manifest(tmp, skip=("train_state.json",))})
        if final.exists():  # a damaged checkpoint of this step, skipped at resume: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        done = sorted((int(m.group(1)), p) for p in ckpt_root.glob("checkpoint-*") if (m := _CKPT.match(p.name)))
        for _, old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _trainable_only_checkpoints(acc, trainable: Sequence[torch.nn.Parameter]) -> list:
    """Register accelerate hooks so that a prepared model with frozen parameters is saved as its
    trainable parameters + buffers only (``model.safetensors`` = the adapter, not the base), and
    loaded back from them; a model without frozen parameters (full fine-tune) is saved whole.
    Returns the hook handles (removed when training ends)."""
    from safetensors.torch import load_file

    ids = {id(p) for p in trainable}

    def kept(model) -> set[str] | None:
        """State-dict keys to save, or None when nothing is frozen (save everything)."""
        named = list(model.named_parameters(remove_duplicate=False))
        if all(id(p) in ids for _, p in named):
            return None
        return ({n for n, p in named if id(p) in ids} | {n for n, _ in model.named_buffers(remove_duplicate=False)})

    def save_hook(models, weights, _out_dir) -> None:
        for i, m in enumerate(models):
            if (keep := kept(m)) is not None:
                weights[i] = {k: v for k, v in weights[i].items() if k in keep}

    def load_hook(models, in_dir) -> None:
        for i in reversed(range(len(models))):   # popped models are skipped by accelerate's own loader
            if (keep := kept(models[i])) is None:
                continue
            f = Path(in_dir) / ("model.safetensors" if i == 0 else f"model_{i}.safetensors")
            missing, unexpected = models[i].load_state_dict(load_file(str(f)), strict=False)
            absent = keep & set(missing)
            if unexpected or absent:
                raise ValueError(f"{f}: does not hold this run's trainable weights (unexpected "
                                 f"{sorted(unexpected)[:3]}, missing {sorted(absent)[:3]}); the checkpoint belongs "
                                 f"to another model: delete {Path(in_dir).parent} to start this run afresh")
            models.pop(i)

    return [acc.register_save_state_pre_hook(save_hook), acc.register_load_state_pre_hook(load_hook)]


def run_training(*, base: BaseConfig, params: TrainParams, model: torch.nn.Module,
                 trainable: list[torch.nn.Parameter], entries: Sequence, compute_loss: LossFn,
                 work_dir: Path, run_name: str, tracker_config: dict | None = None,
                 wandb_group: str | None = None, accelerator=None,
                 batch_fn: BatchFn | None = None, before_batch: Callable[[int], None] | None = None,
                 should_stop: Callable[[int, list[dict]], bool] | None = None) -> tuple[TrainResult, torch.nn.Module]:
    """Train ``model`` for ``params.steps`` optimiser steps, resuming from ``work_dir`` if possible.

    ``entries`` are latent-cache entry paths loaded with ``latents.load_batch``, unless ``batch_fn``
    (list of entries -> batch dict) says otherwise (e.g. preferred/rejected pairs).
    Online stages (RL) pass ``before_batch(g)``, called before global micro-batch ``g`` (process r's
    k-th is k x N + r; to sample a new rollout with the current weights), and ``should_stop(step,
    history)``, asked after every optimiser step (early stopping); both must be pure functions of the
    step and the saved state, so a resumed run stops where an uninterrupted one does, and under N
    processes both are called by every process at the same step (they may run collectives).
    Returns the result and the unwrapped model (the caller saves it where the stage's outputs go).
    """
    from diffusers.optimization import get_scheduler

    work_dir.mkdir(parents=True, exist_ok=True)
    ckpt_root = work_dir / "checkpoints"
    acc = accelerator or make_accelerator(base, params, work_dir)
    optimizer = make_optimizer(params, trainable)
    lr_sched = get_scheduler(params.lr_schedule, optimizer, num_warmup_steps=params.lr_warmup_steps * acc.num_processes,
                             num_training_steps=params.steps * acc.num_processes)
    model, optimizer, lr_sched = acc.prepare(model, optimizer, lr_sched)
    hooks = _trainable_only_checkpoints(acc, trainable)
    plan = BatchPlan(entries, params.batch_size, base.seed, acc.process_index, acc.num_processes, batch_fn)
    _log_batch_arithmetic(acc, params, len(entries))

    step, history = 0, []
    if (last := latest_checkpoint(ckpt_root)) is not None:
        acc.load_state(str(last))
        state = json.loads((last / "train_state.json").read_text())
        step, history = state["step"], state.get("history", [])
        acc.print(f"resuming {run_name} from {last.name} (step {step}/{params.steps})")
    resumed_from = step
    if acc.is_main_process and log_with_tracker(acc):
        acc.init_trackers(base.wandb_project, config=tracker_config or {}, init_kwargs={"wandb": {
            "dir": str(work_dir), "name": run_name, "group": wandb_group, "job_type": run_name.split("/")[0]}})

    model.train()
    bar = tqdm(total=params.steps, initial=step, desc=run_name, disable=not acc.is_local_main_process)
    # a run killed after saving the checkpoint of its early-stop step stops there again on resume
    stop = should_stop is not None and 0 < step < params.steps and should_stop(step, history)
    while step < params.steps and not stop:
        micro_logs = []
        for micro in range(params.grad_accum):
            k = step * params.grad_accum + micro
            if before_batch is not None:     # the global index (BatchPlan's): the same schedule for any N
                before_batch(k * acc.num_processes + acc.process_index)
            with acc.accumulate(model):
                loss, metrics = compute_loss(plan.batch(k), plan.generator(k), model)
                acc.backward(loss)
                if acc.sync_gradients and params.max_grad_norm > 0:
                    acc.clip_grad_norm_(trainable, params.max_grad_norm)
                optimizer.step()
                lr_sched.step()
                optimizer.zero_grad(set_to_none=True)
            micro_logs.append({"loss": float(loss.detach()), **_floats(metrics)})
        step += 1
        # the step's row is the mean over every process's micro-batches: the loss curve of N processes
        # is the curve of one process with the same global batch (grad_accum x N)
        history.append({"step": step, **mean_dicts(_all_processes(acc, mean_dicts(micro_logs)))})
        bar.update(1)
        stop = should_stop is not None and step < params.steps and should_stop(step, history)
        if step % params.log_every == 0 or step == params.steps or stop:
            logged = mean_dicts(log_window(history, step, params.log_every))
            bar.set_postfix(loss=f"{logged['loss']:.4f}")
            acc.log({**logged, "lr": lr_sched.get_last_lr()[0]}, step=step)
        if step % params.checkpoint_every == 0 and step < params.steps:
            _save_checkpoint(acc, ckpt_root, step, history, params.checkpoints_keep)
    bar.close()
    for h in hooks:
        h.remove()
    acc.wait_for_everyone()
    for tracker in acc.trackers:   # not acc.end_training(): it also destroys the process group, and a stage may
        tracker.finish()           # still sample data-parallel after training (train_rl's guard); _cli ends it
    return TrainResult(steps=step, resumed_from=resumed_from, losses=log_windows(history, params.log_every),
                       history=history), acc.unwrap_model(model)


def _all_processes(acc, row: dict[str, float]) -> list[dict[str, float]]:
    """Every process's ``row`` (one process: [row]); the same keys on every process."""
    if acc.num_processes == 1:
        return [row]
    from accelerate.utils import gather_object

    return gather_object([row])


def log_with_tracker(acc) -> bool:
    return bool(acc.log_with)


def _floats(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, torch.Tensor))}


def mean_dicts(rows: Sequence[dict]) -> dict[str, float]:
    """Mean of each key over ``rows`` (the keys of the first row; ``step`` dropped); {} for no rows."""
    keys = [k for k in (rows[0] if rows else {}) if k != "step"]
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def log_windows(history: list[dict], log_every: int) -> list[tuple[int, float]]:
    """(step, mean loss) at every logging step: steps that are multiples of ``log_every`` and the
    last one, each averaged over the steps since the previous logging step."""
    last = history[-1]["step"] if history else 0
    return [(h["step"], mean_dicts(log_window(history, h["step"], log_every))["loss"]) for h in history
            if h["step"] % log_every == 0 or h["step"] == last]


def log_window(history: list[dict], end: int, log_every: int) -> list[dict]:
    """The rows of ``history`` (in step order) for steps (start, end], start = the logging step before ``end``."""
    start = (end - 1) // log_every * log_every
    return history[bisect.bisect_right(history, start, key=lambda h: h["step"]):
                   bisect.bisect_right(history, end, key=lambda h: h["step"])]


def _log_batch_arithmetic(acc, params: TrainParams, n: int) -> None:
    eff = params.batch_size * params.grad_accum * acc.num_processes
    # an entry is a training row, or a group of rows when a stage batches whole groups (batch_fn)
    acc.print(f"training on {n} entries: batch {params.batch_size}/process x accum {params.grad_accum} x "
              f"{acc.num_processes} processes = {eff} per step; {params.steps} steps = "
              f"{params.steps * eff / n:.1f} epochs")
