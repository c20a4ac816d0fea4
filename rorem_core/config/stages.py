"""Every stage's typed config. Defaults equal the tiny preset (params.yaml); a test checks it, so
the code defaults are never a third preset. Batch sizes are per process (GPU)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rorem_core.config.base import BaseConfig, Strict, TrainParams
from rorem_core.config.presets import ATTN_TARGETS, LCM_TARGETS, SyntheticConfig, TinyPresetConfig


class BootstrapConfig(Strict):
    base: BaseConfig
    preset: Literal["tiny", "sdxl"] = "tiny"
    tiny: TinyPresetConfig = TinyPresetConfig()
    base_unet: Literal["shipped", "train", "random"] = "shipped"   # tiny: where the base remover comes from
    # tiny base pretraining (base_unet=train): the recipe of the shipped base (rorem_core/assets/tiny_base)
    pretrain: TrainParams = TrainParams(steps=4800, lr=1e-3, lr_warmup_steps=50, checkpoint_every=500, log_every=50)
    pretrain_size: int = Field(4000, ge=1)   # synthetic pretraining triplets (RORD/Mulan stand-in)
    sdxl_pretrained: str = "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"  # dir or hub id
    sdxl_unet: str | None = None             # optional RORem UNet dir / hub id replacing the base UNet
    synthetic: SyntheticConfig = SyntheticConfig()
    # what the remover sees in the hole of its masked-source input (rorem_core/data/fill.py): zero (grey, as
    # diffusers / RORem) or harmonic (a Laplace fill of the surroundings; a tiny base pretrained with it)
    masked_fill: Literal["zero", "harmonic"] = "zero"

    @model_validator(mode="after")
    def _fill_needs_its_pretraining(self):
        if self.preset == "sdxl" and self.masked_fill != "zero":
            raise ValueError(f"bootstrap.masked_fill: {self.masked_fill} needs a UNet pretrained with that fill; "
                             "SDXL-inpainting and RORem were trained with zero (grey) holes: set masked_fill: zero")
        return self


class TrainRemoverConfig(TrainParams):
    """A round's fine-tune of the remover (full, as RORem). Tiny: the shipped base was annealed to ~0
    by its cosine schedule, so a round only nudges it (lr 2e-5; 1e-4 lowered PSNR, docs/foundation.md)."""

    base: BaseConfig
    lr: float = Field(2e-5, gt=0)
    lr_schedule: Literal["constant", "constant_with_warmup", "cosine", "linear"] = "constant_with_warmup"


class GenerateConfig(Strict):
    base: BaseConfig
    num_seeds: int = Field(2, ge=1)          # K candidates per input (different seeds, one pass)
    steps: int = Field(50, ge=1)
    scheduler: Literal["euler", "lcm"] = "euler"   # lcm needs a LoRA (4 steps)
    strength: float = Field(1.0, gt=0, le=1)
    mask_dilation: int = Field(0, ge=0)      # pixels, at the working resolution
    batch_size: int = Field(64, ge=1)        # UNet batch (inputs x seeds)
    composite: bool = True                   # paste the fill into the untouched source outside the mask
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    prompt: str = ""                         # RORem trains and samples with ""; its quality prompt is optional
    negative_prompt: str = ""                # used only with guidance_scale > 1
    guidance_scale: float = Field(1.0, ge=1.0)   # 1 = no CFG (RORem's inference)
    lora: str | None = None                  # an extra LoRA fused on the remover (RORem's LCM LoRA: scheduler lcm, 4 steps)


class EvaluateConfig(Strict):
    base: BaseConfig
    steps: int = Field(50, ge=1)
    scheduler: Literal["euler", "lcm"] = "euler"
    strength: float = Field(1.0, gt=0, le=1)
    batch_size: int = Field(100, ge=1)
    composite: bool = True
    success_db: float = 20.0                 # oracle: masked PSNR >= this is a success
    judge: Literal["psnr", "judge"] = "psnr"  # success rule: masked PSNR >= success_db, or the judge
    max_images: int | None = None            # None = the whole test split
    references: bool = True                  # also score leave / ring fill / Telea / AE ceiling
    eval_seed: int = 1234
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    num_grid: int = Field(8, ge=0)           # samples in the source | mask | result | GT grid
    prompt: str = ""                         # as generate: RORem's sampling options
    negative_prompt: str = ""
    guidance_scale: float = Field(1.0, ge=1.0)
    lora: str | None = None                  # an extra LoRA (evaluate_lcm with RORem's LCM LoRA)


class EvaluateDPOConfig(EvaluateConfig):
    """evaluate_dpo: the round's DPO remover, same sampler; the references are the remover's."""

    references: bool = False


class EvaluateLCMConfig(EvaluateConfig):
    """evaluate_lcm: the round's distilled student with 4 LCM steps."""

    steps: int = Field(4, ge=1)
    scheduler: Literal["euler", "lcm"] = "lcm"
    references: bool = False


class AutoScoreConfig(Strict):
    base: BaseConfig
    threshold: float | None = None       # accept iff score > threshold; None = the discriminator's own
    # or: the lowest threshold at which the discriminator's held-out human labels are >= min_precision
    # good, over >= min_support of them (reward/metrics.precision_threshold); none such: accept nothing
    min_precision: float | None = Field(None, gt=0, le=1)
    min_support: int = Field(10, ge=1)
    # what must reach min_precision: the held-out estimate, or the lower end of its Wilson 95 % interval
    # (lower95: conservative; the lowest qualifying cut of many noisy estimates is biased high)
    precision_bound: Literal["estimate", "lower95"] = "estimate"
    batch_size: int = Field(64, ge=1)    # images per VAE + discriminator call
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    link: Literal["hardlink", "copy"] = "hardlink"   # how candidate images enter the output folder

    @model_validator(mode="after")
    def _one_rule(self):
        if self.threshold is not None and self.min_precision is not None:
            raise ValueError(f"threshold={self.threshold} and min_precision={self.min_precision} are two rules "
                             "for one threshold; set one of them to null")
        return self


class SelectConfig(Strict):
    base: BaseConfig
    n_select: int | None = Field(None, ge=1)   # units sent to humans; None = fraction of all units
    fraction: float = Field(0.25, gt=0, le=1)
    uncertain_fraction: float = Field(0.5, ge=0, le=1)  # share chosen by uncertainty (rest random)
    unit: Literal["candidate", "input"] = "input"        # input: all K candidates of an input together (pairwise needs >= 2)
    threshold: float | None = None       # None = the discriminator's own
    batch_size: int = Field(64, ge=1)
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"


class LabelsConfig(Strict):
    base: BaseConfig
    link: Literal["hardlink", "copy"] = "hardlink"   # how images enter the merged folder


class TrainDiscriminatorConfig(TrainParams):
    """TrainParams (batch per process, steps, lr, LoRA rank, ...) plus the discriminator's own knobs."""

    base: BaseConfig
    steps: int = Field(600, ge=1)                # the measured tiny recipe (docs/discriminator.md)
    lr: float = Field(3e-4, gt=0)
    lr_schedule: Literal["constant", "constant_with_warmup", "cosine", "linear"] = "constant_with_warmup"
    checkpoint_every: int = Field(200, ge=1)
    log_every: int = Field(50, ge=1)
    # tiny: full (LoRA on its 2 attention blocks does not separate); RORem / SDXL: lora (+ the head)
    mode: Literal["full", "lora"] = "full"
    lora_rank: int = Field(4, ge=1)              # RORem: 4
    # the encoder's input: rorem = [result | mask | source] (RORem); residual = [result - f | mask | f] with f the
    # latent of the source whose hole is filled harmonically (reward/discriminator.py): it orders an input's
    # candidates better on the validation pool, but not in a real round (docs/discriminator.md)
    view: Literal["rorem", "residual"] = "rorem"
    loss: Literal["bce", "softplus_mse"] = "bce"  # bce: calibrated probability; softplus_mse: RORem's
    balance: Literal["pos_weight", "oversample", "none"] = "pos_weight"
    threshold: float = Field(0.5, gt=0)          # "good" iff score > threshold (RORem: 0.5)
    heldout_fraction: float = Field(0.2, ge=0, lt=1)   # share of INPUTS never trained on
    ece_bins: int = Field(10, ge=1)
    eval_batch_size: int = Field(64, ge=1)       # held-out scoring batch
    warm_start: bool = False                     # start from --prev's LoRA + head (RORem's --pretrained_lora)
    # known-good / known-bad examples from triplets with ground truth (--anchors, e.g. the seed set):
    # per triplet (source, mask, GT) is good and (source, mask, source) = "object left" is bad. Training
    # only, never held out: they anchor the obvious cases when human labels are few (round 1)
    anchors: int = Field(200, ge=0)
    # per anchor triplet, this many pairs of near misses: a visible smudge (bad) and a faint one (good) of
    # the same input, the failure the remover makes (reward/anchors.py); 0 = none
    anchor_smudges: int = Field(0, ge=0)
    # a ready discriminator dir used as this round's instead of training one: ours, or RORem's released
    # checkpoint (pytorch_lora_weights.safetensors + cls_pred_branch.pt; its LoRA goes on the base
    # pipeline's SDXL-inpainting UNet). Typical: round 1, before any human label exists
    use: str | None = None
    # candidates of one input against each other (reward/train.py): a micro-batch is `inputs_per_batch`
    # whole inputs (every labelled candidate of each; batch_size is then not used), and `rank_weight` x
    # training/losses.sibling_rank_loss joins the loss, so the input alone cannot lower it (docs/judge.md)
    inputs_per_batch: int | None = Field(None, ge=1)
    rank_weight: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _check_disc(self):
        if self.rank_weight > 0 and self.inputs_per_batch is None:
            raise ValueError(f"rank_weight={self.rank_weight} ranks candidates of the same input, and only batches of "
                             "whole inputs hold them; set inputs_per_batch (e.g. 4), or rank_weight: 0")
        if self.inputs_per_batch is not None and self.balance == "oversample":
            raise ValueError("inputs_per_batch batches whole inputs, which oversample (repeating single candidates) "
                             "would break up; use balance: pos_weight")
        if self.balance == "pos_weight" and self.loss != "bce":
            raise ValueError(f"balance=pos_weight needs loss=bce (got loss={self.loss}); use balance=oversample")
        if self.loss == "bce" and not self.threshold < 1:
            raise ValueError(f"threshold={self.threshold} is a probability for loss=bce; use a value in (0, 1)")
        return self


class TrainsetConfig(Strict):
    base: BaseConfig
    human_min_score: float = Field(0.5, ge=0, le=1)  # a human label >= this is an accepted removal
    link: Literal["hardlink", "copy"] = "hardlink"


class BuildPairsConfig(Strict):
    """build_pairs: which pairs to make from human labels and discriminator scores."""

    base: BaseConfig
    margin: float = Field(0.3, gt=0, le=1)     # rule (c): min |score_a - score_b| (probabilities)
    good_min: float = Field(0.5, ge=0, le=1)   # rule (b): score >= good_min is a good result
    bad_max: float = Field(0.5, ge=0, le=1)    # rule (b): score < bad_max is a bad result
    max_pairs_per_input: int | None = Field(6, ge=1)  # per rule and input, largest gaps first; None = all

    @model_validator(mode="after")
    def _check(self):
        if self.bad_max > self.good_min:
            raise ValueError(f"bad_max={self.bad_max} > good_min={self.good_min}: a result would be "
                             "both good and bad; set bad_max <= good_min")
        return self


class TrainDPOConfig(TrainParams):
    """train_dpo: Diffusion-DPO (pairs) or Diffusion-KTO (good/bad labels) as a LoRA on the remover.
    Batch sizes count pairs (DPO) or results (KTO) per process."""

    base: BaseConfig
    loss: Literal["dpo", "kto"] = "dpo"      # a name in rorem_core.training.losses.LOSSES
    beta: float = Field(5000.0, gt=0)        # DPO beta, with the explicit 1/2 (SF / HF-SDXL)
    kto_beta: float = Field(1000.0, gt=0)    # KTO beta (no 1/2, diffusion-kto default)
    kto_desirable_weight: float = Field(1.0, gt=0)
    kto_undesirable_weight: float = Field(1.0, gt=0)
    label_good_min: float = Field(0.5, ge=0, le=1)   # KTO from scores: good if score >= this
    masked: bool = False                     # error inside the hole / hole area (Follow-Your-Preference)
    lora_targets: list[str] = Field(default_factory=lambda: list(ATTN_TARGETS))
    val_fraction: float = Field(0.2, ge=0, lt=1)     # held-out inputs for the implicit accuracy
    val_draws: int = Field(4, ge=1)          # (t, eps) draws per held-out pair
    # defaults differing from the remover's: LoRA, constant lr (HF-DPO README)
    mode: Literal["full", "lora"] = "lora"
    lora_rank: int = Field(8, ge=1)
    lr: float = Field(1e-4, gt=0)
    lr_schedule: Literal["constant", "constant_with_warmup", "cosine", "linear"] = "constant"
    lr_warmup_steps: int = Field(0, ge=0)
    batch_size: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _lora_only(self):
        if self.mode != "lora":
            raise ValueError(f"mode={self.mode!r}: preference training is LoRA-only (the reference is the "
                             "UNet with adapters disabled, no second copy); set mode: lora")
        return self


class DistillConfig(TrainParams):
    """distill: 4-step LCM LoRA from the remover teacher; reward-weighted when reward_mode != none."""

    base: BaseConfig
    loss_type: Literal["l2", "huber"] = "l2"      # per sample; huber = pseudo-Huber
    huber_c: float = Field(0.001, gt=0)
    num_ddim_timesteps: int = Field(50, ge=2)     # teacher skip-step grid; must equal LCMScheduler's
                                                  # original_inference_steps at inference (50)
    guidance_min: float = Field(0.0, ge=0)        # teacher CFG w ~ U[min, max] (Imagen convention);
    guidance_max: float = Field(0.0, ge=0)        # 0 = off: RORem samples with the empty prompt, guidance 1
    reward_mode: Literal["none", "clamp", "softmax"] = "softmax"   # none = plain distillation
    reward_temperature: float = Field(0.1, gt=0)  # softmax mode
    reward_threshold: float | None = None         # weight 0 below this score (e.g. 0.5, RORem acceptance)
    unscored_score: float = Field(1.0, ge=0, le=1)  # score of training triplets without one (GT)
    reward_scale: float = Field(0.0, ge=0)        # RG-LCD reward term; > 0 needs a reward model
    lora_targets: list[str] = Field(default_factory=lambda: list(LCM_TARGETS))
    mode: Literal["full", "lora"] = "lora"
    lora_rank: int = Field(16, ge=1)              # tiny; RORem / diffusers LCM-LoRA (SDXL): r 64, alpha 64
    lr: float = Field(3e-5, gt=0)                 # tiny: above ~3e-5 the student drifts (docs/preference.md)
    lr_schedule: Literal["constant", "constant_with_warmup", "cosine", "linear"] = "constant"
    lr_warmup_steps: int = Field(0, ge=0)
    batch_size: int = Field(16, ge=1)
    steps: int = Field(300, ge=1)
    # a ready 4-step LCM LoRA (RORem's released one) used as this round's LCM model instead of distilling:
    # checked on the teacher's UNet (every tensor must fit), copied, stacked on the teacher; nothing trained
    use: str | None = None

    @model_validator(mode="after")
    def _check_distill(self):
        if self.mode != "lora":
            raise ValueError(f"mode={self.mode!r}: distillation trains a LoRA student (teacher = adapters "
                             "disabled); set mode: lora")
        if self.guidance_max < self.guidance_min:
            raise ValueError(f"guidance_max={self.guidance_max} < guidance_min={self.guidance_min}")
        return self


class TrainRLConfig(TrainParams):
    """train_rl: online RL (DDPO-style PPO, or REINFORCE with a group baseline) as a LoRA on the round's
    remover against a reward model; reference = the same UNet with adapters disabled (docs/rl.md).
    ``steps`` = optimiser steps over all rollouts; ``batch_size`` = transitions (x_t -> x_t') per step."""

    base: BaseConfig
    enabled: bool = True                     # false: the stage copies nothing and writes a skipped marker
    loss: Literal["ppo", "reinforce"] = "ppo"
    reward: str = "discriminator"            # a name in rorem_core.rl.rewards.REWARDS (oracle: synthetic only)
    num_samples: int = Field(4, ge=1)        # K samples per input: the group of the baseline
    inputs_per_epoch: int = Field(16, ge=1)  # rollout inputs per rollout (G); G K samples per rollout
    sampler_steps: int = Field(10, ge=1)     # DDIM steps of the stochastic sampler
    eta: float = 1.0                         # DDIM eta; 1 = DDPM ancestral variance (DDPO); 0 has no density
    timestep_fraction: float = Field(0.5, gt=0, le=1)   # share of each chain's steps trained on (DDPO)
    inner_epochs: int = Field(1, ge=1)       # passes over a rollout before sampling the next
    clip_range: float = Field(1e-4, gt=0)    # PPO ratio clip (DDPO: 1e-4)
    adv_clip: float = Field(5.0, gt=0)       # advantage clamp (DDPO: 5)
    kl_coef: float = Field(0.0, ge=0)        # per-step KL-to-reference penalty (DPOK); 0 = off
    kl_budget: float | None = Field(None, gt=0)   # stop when the last rollout's mean KL to the reference exceeds it
    heldout_fraction: float = Field(0.2, gt=0, lt=1)  # pool inputs never rolled out: the guard's held-out reward
    heldout_max: int | None = Field(40, ge=1)
    # seed-split triplets (--seed data/seed) that join the rollout inputs, chosen from base.seed: more inputs
    # with GT for the oracle; rollout inputs only (the held-out guard stays pool inputs); 0 = the pool only
    seed_inputs: int = Field(0, ge=0)
    patience: int = Field(3, ge=0)           # rollouts without a held-out reward gain before stopping; 0 = never
    min_delta: float = Field(0.0, ge=0)
    test_images: int | None = Field(100, ge=1)    # test split images for the oracle before/after (None = all)
    success_db: float = 20.0                 # oracle success: masked PSNR >= this
    sample_batch_size: int = Field(64, ge=1)  # UNet rows per sampling call
    lora_targets: list[str] = Field(default_factory=lambda: list(ATTN_TARGETS))
    mode: Literal["full", "lora"] = "lora"
    lora_rank: int = Field(8, ge=1)
    lr: float = Field(3e-4, gt=0)            # DDPO's LoRA lr
    lr_schedule: Literal["constant", "constant_with_warmup", "cosine", "linear"] = "constant"
    lr_warmup_steps: int = Field(0, ge=0)
    batch_size: int = Field(32, ge=1)
    steps: int = Field(40, ge=1)
    checkpoint_every: int = Field(10, ge=1)
    log_every: int = Field(5, ge=1)
    augment_dihedral: bool = False

    @model_validator(mode="after")
    def _check_rl(self):
        if self.mode != "lora":
            raise ValueError(f"mode={self.mode!r}: train_rl is LoRA-only (the KL reference is the UNet with "
                             "adapters disabled, no second copy); set mode: lora")
        if not self.eta > 0:
            raise ValueError(f"eta={self.eta}: the deterministic DDIM step (eta = 0) has no density, so no "
                             "policy gradient; set eta > 0 (DDPO: 1.0)")
        if self.num_samples < 2:
            raise ValueError(f"num_samples={self.num_samples}: the group baseline normalises rewards over the K "
                             "samples of each input and needs K >= 2; set num_samples: 4 (or more)")
        if self.augment_dihedral:
            raise ValueError("augment_dihedral=true: a rollout's transitions are scored as sampled (an augmented "
                             "x_t changes its log-prob); set augment_dihedral: false")
        return self


class EvaluateRLConfig(EvaluateConfig):
    """evaluate_rl: the round's RL remover, same sampler as the remover's evaluation."""

    references: bool = False


class ReportConfig(Strict):
    base: BaseConfig
    title: str = "rorem-loop: rounds so far"
    calibration_bins: int = Field(10, ge=2)   # equal-width score bins of the reliability diagram
