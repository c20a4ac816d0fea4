"""Discriminator training on all human labels so far, with a held-out split that is never trained on.

Labels are scored RORem ``meta.json`` files (source, mask, GT = the judged result, score 0/1 or a
soft mean of annotators); one per round. Every (source, mask, result) triple goes through the
latent cache (encoded once, shared with the remover), and training runs on the generic resumable
trainer (``rorem_core.training.trainer``), so checkpoints, resume and trackers are the remover's.

Held-out split, by INPUT: an input is identified by the content of its (source, mask) files, and it
is held out iff u(seed, input) < heldout_fraction with u a hash-uniform in [0, 1). The decision for
an input never depends on the other inputs, so as labels accumulate over rounds an input keeps its
side; ``split.json`` is written with the model and a previous split can be passed to pin it.

Class imbalance: ``balance: pos_weight`` uses BCE with pos_weight = n_neg / n_pos and then corrects
the prior shift at scoring time (logit_offset = -ln pos_weight: the weighted optimum's logit is the
true log-odds + ln pos_weight), so probabilities stay calibrated; ``oversample`` repeats minority
entries instead (any loss); ``none`` does nothing.

Within-input ranking (``inputs_per_batch``, ``rank_weight``): batches of whole inputs, and a
Bradley-Terry term over each input's clean vs failed candidates, so that the input alone (easy or hard)
cannot lower the loss. The held-out metrics always hold the within-input AUC (``heldout_within_input``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rorem_core.config import TrainDiscriminatorConfig, config_hash
from rorem_core.data.augment import augment
from rorem_core.data.formats import FormatError, dataset_file, read_triplets, resolve_in_root
from rorem_core.data.latents import latent_cache, load_batch, load_entry
from rorem_core.io import atomic_dir, sha256_bytes, write_json_atomic
from rorem_core.models.loading import configure_attention
from rorem_core.models.unet import DTYPES
from rorem_core.reward.anchors import read_anchors
from rorem_core.reward.discriminator import (
    RESIDUAL_FILL,
    Discriminator,
    DiscriminatorInfo,
    build_discriminator,
    load_discriminator,
    make_trainable,
    save_discriminator,
)
from rorem_core.reward.metrics import grouped_agreement, within_group_auc
from rorem_core.training.losses import get_loss, pos_weight_from_labels, sibling_rank_loss

GROUP_KEYS = ("band", "kind", "round")   # extra meta.json keys reported as metric groups when present


@dataclass(frozen=True)
class LabelledSample:
    source: Path
    mask: Path
    result: Path
    label: float                  # in [0, 1]; 1 = good removal
    extra: dict = field(default_factory=dict, hash=False, compare=False)   # id, band, kind, ...


def read_labelled(metas: Sequence[Path]) -> list[LabelledSample]:
    """Scored triplets of every meta.json (GT = the judged result); unscored entries are an error."""
    out = []
    for meta in metas:
        entries = read_triplets(meta)
        bad = [i for i, t in enumerate(entries) if t.score is None or not 0 <= t.score <= 1]
        if bad:
            raise FormatError(f"{meta}: {len(bad)} entries (first {bad[:5]}) lack a score in [0, 1]; a label "
                              "file needs score 1 (good) / 0 (bad) per entry, as the annotation pull writes")
        for i, t in enumerate(entries):
            f = [resolve_in_root(meta.parent, r, where=f"{meta} entry {i}") for r in (t.source, t.mask, t.GT)]
            out.append(LabelledSample(*f, label=float(t.score), extra=t.model_extra or {}))
    return out


def input_key(s: LabelledSample) -> str:
    """Content id of the input (source + mask files), whatever path or round it comes from."""
    return sha256_bytes(s.source.read_bytes(), s.mask.read_bytes())[:24]


def _unit_hash(seed: int, key: str) -> float:
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:15], 16) / 16**15


def split_by_input(keys: Sequence[str], fraction: float, seed: int, prev: dict | None = None) -> dict:
    """{"heldout": [...], "train": [...]} of unique input keys; ``prev`` (an earlier split) pins its keys."""
    held_prev, train_prev = set((prev or {}).get("heldout", [])), set((prev or {}).get("train", []))
    held, train = set(), set()
    for k in set(keys):
        is_held = k in held_prev or (k not in train_prev and _unit_hash(seed, k) < fraction)
        (held if is_held else train).add(k)
    return {"version": 1, "seed": seed, "fraction": fraction, "heldout": sorted(held), "train": sorted(train)}


def _content_key(target: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> str:
    return sha256_bytes(*(t.contiguous().numpy().tobytes() for t in (target, source, mask)))


class LabelTable:
    """Label of a batch row from its latent content: the trainer's batches carry tensors, not ids.
    Identical (result, mask, source) triples share a cache entry and get the mean of their labels."""

    def __init__(self, entries: Sequence[Path], labels: Sequence[float]):
        sums: dict[Path, list[float]] = {}
        for p, y in zip(entries, labels):
            sums.setdefault(p, []).append(y)
        self.entries = list(sums)
        self.labels = [float(np.mean(v)) for v in sums.values()]
        self._by_key = {}
        for p, y in zip(self.entries, self.labels):
            e = load_entry(p)
            self._by_key[_content_key(e["target"], e["source"], e["mask"])] = y

    def lookup(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        keys = [_content_key(batch["target"][i], batch["source"][i], batch["mask"][i]) for i in range(len(batch["target"]))]
        return torch.tensor([self._by_key[k] for k in keys], dtype=torch.float32)


def oversample(entries: list[Path], labels: list[float]) -> list[Path]:
    """Repeat minority-class entries (label <= 0.5 vs > 0.5) until both classes have ~equal counts."""
    pos = [e for e, y in zip(entries, labels) if y > 0.5]
    neg = [e for e, y in zip(entries, labels) if y <= 0.5]
    if not pos or not neg:
        return list(entries)
    small, big = sorted((pos, neg), key=len)
    reps, rest = divmod(len(big), len(small))
    return big + small * reps + small[:rest]


def make_discriminator_loss(disc: Discriminator, table: LabelTable, cfg: TrainDiscriminatorConfig, device,
                            pos_weight: float | None):
    """compute_loss(batch, gen) for the trainer: labels looked up, dihedral augmentation (label-preserving,
    applied jointly to result, mask and source), logits, registered loss."""
    loss = get_loss(cfg.loss)
    kw = {"pos_weight": pos_weight} if cfg.loss == "bce" else {}

    def compute_loss(batch: dict, gen: torch.Generator, model=None):   # model: the prepared (DDP) disc
        groups = batch.pop("group", None)          # [B] input index of each row (batches of whole inputs)
        y = table.lookup(batch).to(device)
        if cfg.augment_dihedral:
            batch = augment(batch, gen)
        b = {k: v.to(device) for k, v in batch.items()}
        logits = (model or disc)(*disc_latents(b, cfg.view))
        total, metrics = loss(logits, y, **kw)
        if cfg.rank_weight > 0:
            rank, rank_metrics = sibling_rank_loss(logits, y, groups.to(device))
            total, metrics = total + cfg.rank_weight * rank, {**metrics, **rank_metrics, "rank_loss": rank.detach()}
        return total, metrics

    return compute_loss


def disc_latents(batch: dict, view: str) -> tuple:
    """(result, mask, source, filled) of a batch of cache entries: the residual view's filled source is the
    entry's masked latent (a cache whose fill is RESIDUAL_FILL: prepare_labels)."""
    return batch["target"], batch["mask"], batch["source"], (batch["masked"] if view == "residual" else None)


def whole_input_batches(groups: Sequence[Sequence[Path]]) -> dict[str, torch.Tensor]:
    """The trainer's ``batch_fn`` for ``inputs_per_batch``: every entry of each group (an input's labelled
    candidates) in one batch, plus ``group`` [B], the row's group number within the batch."""
    batch = load_batch([e for g in groups for e in g])
    batch["group"] = torch.tensor([i for i, g in enumerate(groups) for _ in g])
    return batch


@torch.no_grad()
def score_entries(disc: Discriminator, entries: Sequence[Path], batch_size: int) -> np.ndarray:
    """Scores of cached (result, mask, source) entries, in batches."""
    was_training = disc.training
    disc.eval()
    out = []
    for i in range(0, len(entries), batch_size):
        b = {k: v.to(disc.device) for k, v in load_batch(entries[i:i + batch_size]).items()}
        out.append(disc.score(disc(*disc_latents(b, disc.info.view))).cpu().numpy())
    disc.train(was_training)
    return np.concatenate(out) if out else np.zeros(0)


def _groups(samples: Sequence[LabelledSample]) -> dict[str, list]:
    return {k: [s.extra.get(k) for s in samples] for k in GROUP_KEYS if any(k in s.extra for s in samples)}


@dataclass
class LabelData:
    """The labelled samples of one training run, split by input, with their cache entries."""

    split: dict
    train: list[LabelledSample]
    held: list[LabelledSample]
    held_keys: list[str]
    held_entries: list[Path]
    table: LabelTable          # unique training entries and their (mean) labels
    train_groups: list[list[Path]] = field(default_factory=list)   # unique training entries per input


def prepare_labels(cfg: TrainDiscriminatorConfig, init_ref: str | Path, label_metas: Sequence[Path],
                   prev: Path | None, anchors: Path | None = None) -> LabelData:
    """Read the labels, split them by input (pinned by ``prev``'s split.json) and encode every triple once;
    ``cfg.anchors`` triplets of ``anchors`` join the training side only."""
    samples = read_labelled(label_metas)
    keys = [input_key(s) for s in samples]
    prev_split = json.loads((prev / "split.json").read_text()) if prev and (prev / "split.json").is_file() else None
    split = split_by_input(keys, cfg.heldout_fraction, cfg.base.seed, prev_split)
    held = set(split["heldout"])
    train_s = [s for s, k in zip(samples, keys) if k not in held]
    train_k = [k for k in keys if k not in held]
    held_s = [s for s, k in zip(samples, keys) if k in held]
    if cfg.anchors:
        if anchors is None:
            raise ValueError(f"train_discriminator.anchors={cfg.anchors} needs triplets with ground truth "
                             "(--anchors data/seed); or set anchors: 0")
        extra = [LabelledSample(src, mask, res, y, {"kind": kind}) for src, mask, res, y, kind in read_anchors(
            dataset_file(anchors), cfg.anchors, cfg.base.seed, cfg.anchor_smudges, Path(cfg.base.work_dir))]
        train_s, train_k = train_s + extra, train_k + [input_key(s) for s in extra]
    if not train_s:
        raise ValueError(f"all {len(samples)} labelled samples are held out; lower heldout_fraction "
                         f"({cfg.heldout_fraction}) or add labels")
    # the residual view reads the harmonically filled source from the entries' masked latent
    cache = latent_cache(init_ref, cfg.base, cfg.frozen_dtype, RESIDUAL_FILL if cfg.view == "residual" else None)
    train_e = cache.ensure([(s.source, s.mask, s.result) for s in train_s])
    held_e = cache.ensure([(s.source, s.mask, s.result) for s in held_s])
    groups: dict[str, list[Path]] = {}       # by input (anchors: their GT and "object left" together)
    for k, e in zip(train_k, train_e):
        g = groups.setdefault(k, [])
        if e not in g:
            g.append(e)
    return LabelData(split, train_s, held_s, [k for k in keys if k in held], held_e,
                     LabelTable(train_e, [s.label for s in train_s]), list(groups.values()))


def build_for_training(cfg: TrainDiscriminatorConfig, init_ref: str | Path, prev: Path | None):
    """A fresh discriminator on ``init_ref`` (optionally warm-started from ``prev``) and its trainable params."""
    info = DiscriminatorInfo(base=str(init_ref), mode=cfg.mode, lora_rank=cfg.lora_rank, loss=cfg.loss,
                             threshold=cfg.threshold, resolution=cfg.base.resolution, view=cfg.view)
    # frozen_dtype applies to the frozen encoder only: a fully fine-tuned encoder keeps fp32 master weights
    dtype = DTYPES[cfg.frozen_dtype] if cfg.mode == "lora" else torch.float32
    disc = build_discriminator(init_ref, cache_dir=cfg.base.cache_dir, info=info, dtype=dtype, seed=cfg.base.seed)
    if cfg.gradient_checkpointing:
        disc.unet.enable_gradient_checkpointing()     # the down/mid blocks check their own flag
    configure_attention(disc.unet, xformers={"auto": "auto", "on": True, "off": False}[cfg.xformers])
    trainable = make_trainable(disc, seed=cfg.base.seed)
    if cfg.warm_start and prev is not None:
        _warm_start(disc, prev, cfg)
    return disc, trainable


def train_discriminator(cfg: TrainDiscriminatorConfig, init_ref: str | Path, label_metas: Sequence[Path],
                        out_dir: Path, *, prev: Path | None = None, run_name: str = "train_discriminator",
                        wandb_group: str | None = None, anchors: Path | None = None) -> dict:
    """Train on the training inputs of ``label_metas``, evaluate on the held-out inputs, write ``out_dir``
    (discriminator + split.json + heldout_scores.json + train_summary.json) atomically; returns metrics."""
    from rorem_core.training.trainer import make_accelerator, run_training

    data = prepare_labels(cfg, init_ref, label_metas, prev, anchors)
    table = data.table
    pw = pos_weight_from_labels(torch.tensor(table.labels)) if cfg.balance == "pos_weight" else None
    entries = oversample(table.entries, table.labels) if cfg.balance == "oversample" else table.entries
    batch_fn, params = None, cfg
    if cfg.inputs_per_batch:     # the trainer's micro-batch = inputs_per_batch groups of entries
        entries, batch_fn = data.train_groups, whole_input_batches
        params = cfg.model_copy(update={"batch_size": cfg.inputs_per_batch})
    disc, trainable = build_for_training(cfg, init_ref, prev)
    work = Path(cfg.base.work_dir) / run_name.replace("/", "_") / config_hash(
        cfg, str(init_ref), str(prev), *map(str, table.entries))[:16]
    acc = make_accelerator(cfg.base, cfg, work)
    loss_fn = make_discriminator_loss(disc, table, cfg, acc.device, pw)
    result, disc = run_training(base=cfg.base, params=params, model=disc, trainable=trainable, entries=entries,
                                compute_loss=loss_fn, work_dir=work, run_name=run_name, batch_fn=batch_fn,
                                tracker_config=cfg.model_dump(), wandb_group=wandb_group, accelerator=acc)
    # prior-shift correction of pos_weight (module docstring); 0 when balanced or unweighted
    disc.info = disc.info.model_copy(update={"logit_offset": -math.log(pw) if pw else 0.0})
    metrics, held_scores = _evaluate(disc, cfg, data.held, data.held_entries, table)
    # candidates of one input against each other (reward/metrics.within_group_auc)
    metrics["heldout_within_input"] = within_group_auc([s.label for s in data.held], held_scores, data.held_keys) \
        if data.held else None
    metrics.update(n_train_samples=len(data.train), n_heldout_samples=len(data.held),
                   n_train_inputs=len(data.split["train"]), n_heldout_inputs=len(data.split["heldout"]),
                   pos_weight=pw, logit_offset=disc.info.logit_offset, steps=result.steps,
                   resumed_from=result.resumed_from, first_loss=result.first_loss, last_loss=result.last_loss)
    if acc.is_main_process:
        _write_outputs(disc, cfg, init_ref, out_dir, data, held_scores, metrics, result)
    return metrics


def _warm_start(disc: Discriminator, prev: Path, cfg: TrainDiscriminatorConfig) -> None:
    """Copy LoRA + head weights of the previous round's discriminator (same architecture required)."""
    old = load_discriminator(prev, cache_dir=cfg.base.cache_dir, base=disc.info.base)
    mine, theirs = (disc.info.mode, disc.info.lora_rank, disc.info.view), (old.info.mode, old.info.lora_rank, old.info.view)
    if mine != theirs:
        raise ValueError(f"warm_start: {prev} has (mode, rank, view) = {theirs}, this run {mine}; make them equal "
                         "or warm_start: false")
    trainable = {n for n, p in disc.named_parameters() if p.requires_grad}
    state = {n: v for n, v in old.state_dict().items() if n in trainable}
    disc.load_state_dict(state, strict=False)


def _evaluate(disc, cfg, held_s, held_e, table: LabelTable) -> tuple[dict, np.ndarray]:
    held_scores = score_entries(disc, held_e, cfg.eval_batch_size)
    train_scores = score_entries(disc, table.entries, cfg.eval_batch_size)   # unique training triples
    kw = {"threshold": cfg.threshold, "bins": cfg.ece_bins}
    heldout = grouped_agreement([s.label for s in held_s], held_scores, _groups(held_s), **kw) if held_s else {}
    return {"heldout": heldout, "train": grouped_agreement(table.labels, train_scores, **kw)["all"]}, held_scores


def _write_outputs(disc, cfg, init_ref, out_dir: Path, data: LabelData, held_scores, metrics, result) -> None:
    rows = [{"input": k, "result": s.result.name, "label": s.label, "score": float(sc),
             **{g: s.extra[g] for g in ("id", *GROUP_KEYS) if g in s.extra}}
            for s, k, sc in zip(data.held, data.held_keys, held_scores)]
    # the temp dir is a sibling of out_dir, so the relative base path written into it stays valid
    with atomic_dir(out_dir) as tmp:
        save_discriminator(disc, tmp, init_ref)
        write_json_atomic(tmp / "split.json", data.split)
        write_json_atomic(tmp / "heldout_scores.json", rows)
        write_json_atomic(tmp / "train_summary.json", {"losses": result.losses, "metrics": metrics,
                                                       "config": cfg.model_dump()})
