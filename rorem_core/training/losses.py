"""Training losses as pure tensor functions, chosen by name through ``LOSSES`` / ``get_loss``.

Conventions (style-anchors.md §8 rule 4):
- every loss returns ``(loss, metrics)``: ``loss`` a 0-dim tensor with grad, ``metrics`` a dict of
  detached 0-dim fp32 tensors (no GPU sync; call ``float()`` when logging);
- hyperparameters are keyword-only; per-sample errors are computed in fp32 (fp64 inputs stay fp64);
- "per-sample error" = mean over C, H, W of the squared error -> [B], never a batch mean inside a
  log-sigmoid (diffusers #6702); batch reductions are means unless a docstring says otherwise;
- optional per-sample ``weights`` [B] are treated as constants (detached) and enter as mean(w_i * l_i),
  so mean-1 weights (``reward_weights``) keep the learning rate's meaning.
Formulas: in each loss's docstring; sources and hyperparameters in docs/preference.md (DPO, KTO,
reward-weighted LCD) and docs/rl.md (DDPO / DPOK policy gradient).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

Metrics = dict[str, torch.Tensor]
LN2 = math.log(2.0)  # DPO loss at initialisation (policy == reference)


def _m(x: torch.Tensor) -> torch.Tensor:
    return x.detach().float()


def _f32(x: torch.Tensor) -> torch.Tensor:
    """At least fp32: fp16/bf16/int/bool -> fp32, fp64 stays fp64 (for exact reference tests)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _check_batch(name: str, *tensors: torch.Tensor) -> None:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"{name}: expected per-sample tensors of one shape [B], got "
                         f"{[tuple(t.shape) for t in tensors]}; reduce over C,H,W with per_sample_error")


def _weighted_mean(per_sample: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """mean_i(w_i * l_i); with weights None this is exactly per_sample.mean()."""
    if weights is None:
        return per_sample.mean()
    _check_batch("weights", per_sample, weights)
    return (weights.detach().to(per_sample.dtype) * per_sample).mean()


# ---------------------------------------------------------------- remover (denoising) loss


def per_sample_error(pred: torch.Tensor, target: torch.Tensor, *,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample squared error in fp32: (B, C, H, W) x2 -> [B].

    No mask:  e_i = mean_{c,h,w} (pred - target)^2.
    mask (B, 1, h, w) or (B, C, h, w) at latent resolution, values in [0, 1] (1 = hole):
              e_i = sum_{c,h,w} m (pred - target)^2 / sum_{c,h,w} m
    i.e. the mean error *inside the hole*, normalised by the hole area, so small and large holes are
    weighted alike (masking without renormalising would scale DPO's beta by the hole fraction).
    """
    sq = (_f32(pred) - _f32(target)) ** 2
    if mask is None:
        return sq.mean(dim=tuple(range(1, sq.ndim)))
    if mask.ndim != sq.ndim or mask.shape[-2:] != sq.shape[-2:] or mask.shape[0] != sq.shape[0]:
        raise ValueError(f"per_sample_error: mask shape {tuple(mask.shape)} does not match the latent "
                         f"{tuple(sq.shape)}; resize the pixel mask to the latent size with "
                         "F.interpolate(mask, size=latent.shape[-2:], mode='nearest')")
    m = mask.to(sq.dtype).expand_as(sq)  # (B, 1, h, w) -> (B, C, h, w)
    dims = tuple(range(1, sq.ndim))
    area = m.sum(dim=dims)
    if bool((area <= 0).any()):
        empty = torch.nonzero(area <= 0).flatten().tolist()
        raise ValueError(f"per_sample_error: empty mask for batch samples {empty}; the masked "
                         "variant needs a non-empty hole (drop these samples or use mask=None)")
    return (m * sq).sum(dim=dims) / area


def diffusion_loss(pred: torch.Tensor, target: torch.Tensor, *, weights: torch.Tensor | None = None,
                   mask: torch.Tensor | None = None) -> tuple[torch.Tensor, Metrics]:
    """Remover training loss ("mse"): L = mean_i w_i * e_i with e_i = ``per_sample_error``.

    pred, target (B, C, H, W): target is eps or v, chosen by the caller (``lcm.training_target``).
    weights [B] optional (default 1); mask optional (masked variant, see ``per_sample_error``).
    Metrics: ``mse`` = unweighted mean_i e_i.
    """
    err = per_sample_error(pred, target, mask=mask)
    return _weighted_mean(err, weights), {"mse": _m(err.mean())}


# ---------------------------------------------------------------- discriminator losses


def bce_loss(logits: torch.Tensor, labels: torch.Tensor, *,
             pos_weight: float | None = None) -> tuple[torch.Tensor, Metrics]:
    """Binary cross-entropy on logits ("bce"); the calibrated score is p = sigmoid(logit).

    L = -mean_i [ pw * y_i log p_i + (1 - y_i) log(1 - p_i) ],  pw = ``pos_weight`` (default 1).
    logits, labels [B]; labels in {0, 1} or soft in [0, 1]. For class imbalance set
    pos_weight = n_negative / n_positive (``pos_weight_from_labels``).
    Metrics: ``accuracy`` (p > 0.5 vs y > 0.5), ``prob_mean``.
    """
    _check_batch("bce_loss", logits, labels)
    x = _f32(logits)
    pw = None if pos_weight is None else torch.tensor(float(pos_weight), dtype=x.dtype, device=x.device)
    loss = F.binary_cross_entropy_with_logits(x, labels.to(x.dtype), pos_weight=pw)
    prob = torch.sigmoid(logits.detach().float())
    acc = ((prob > 0.5) == (labels > 0.5)).float().mean()
    return loss, {"accuracy": acc, "prob_mean": prob.mean()}


def softplus_mse_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
    """RORem's discriminator loss ("softplus_mse"): L = mean_i (softplus(logit_i) - y_i)^2.

    The score softplus(logit) is in [0, inf), not a probability; RORem accepts a result if score > 0.5.
    logits, labels [B]. Metrics: ``accuracy`` (score > 0.5 vs y > 0.5), ``score_mean``.
    """
    _check_batch("softplus_mse_loss", logits, labels)
    score = F.softplus(_f32(logits))
    loss = ((score - _f32(labels)) ** 2).mean()
    acc = ((score.detach() > 0.5) == (labels > 0.5)).float().mean()
    return loss, {"accuracy": acc, "score_mean": _m(score.mean())}


def sibling_rank_loss(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
    """Ranking of candidates of the SAME input (group), added to a discriminator loss:

        L = mean over pairs (i, j) with g_i = g_j, y_i > 0.5 >= y_j of softplus(-(z_i - z_j))
          = -mean log sigmoid(z_i - z_j)                      (Bradley-Terry: the clean one ranks first)

    logits z, labels y, groups g: [B]. The input alone (its texture, its difficulty) cannot lower it:
    only what differs between siblings, the fill, can. 0 (with a gradient of 0) when the batch holds no
    such pair. Metrics: ``rank_pairs`` (how many), ``rank_acc`` (share with z_i > z_j; 0 without pairs).
    """
    _check_batch("sibling_rank_loss", logits, labels, groups)
    z = _f32(logits)
    good, bad = labels > 0.5, labels <= 0.5
    pair = (groups[:, None] == groups[None, :]) & good[:, None] & bad[None, :]     # [B, B]: i good, j bad
    n = int(pair.sum())
    if n == 0:
        return z.sum() * 0.0, {"rank_pairs": torch.tensor(0.0), "rank_acc": torch.tensor(0.0)}
    diff = (z[:, None] - z[None, :])[pair]
    return F.softplus(-diff).mean(), {"rank_pairs": torch.tensor(float(n)), "rank_acc": _m((diff > 0).float().mean())}


def pos_weight_from_labels(labels: torch.Tensor) -> float:
    """n_negative / n_positive for ``bce_loss(pos_weight=...)``; 1.0 when a class is absent."""
    n_pos = float((labels > 0.5).sum())
    n_neg = float(labels.numel()) - n_pos
    return n_neg / n_pos if n_pos > 0 and n_neg > 0 else 1.0


DISCRIMINATOR_SCORES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "bce": torch.sigmoid,  # calibrated probability
    "softplus_mse": F.softplus,  # RORem's unbounded score
}


# ---------------------------------------------------------------- preference losses


def dpo_loss(policy_w: torch.Tensor, policy_l: torch.Tensor, ref_w: torch.Tensor,
             ref_l: torch.Tensor, *, beta: float = 5000.0) -> tuple[torch.Tensor, Metrics]:
    """Diffusion-DPO ("dpo"), preference-learning.md §0 (SF / HF-SDXL form with the explicit 1/2).

    Inputs: per-sample errors [B] (``per_sample_error``) of the policy and of the frozen reference,
    for the preferred (w) and rejected (l) sample, all at the SAME (t, eps, x_t, condition).
        z = -(beta / 2) * [ (e_th^w - e_th^l) - (e_ref^w - e_ref^l) ]
        L = -mean_i logsigmoid(z_i)            (L = ln 2 when policy == reference)
    The reference errors are detached here (they must carry no gradient).
    Metrics: implicit_acc = mean(z > 0) + 0.5 mean(z == 0); reward_margin = mean z = r^w - r^l with
    implicit rewards r^k = -(beta/2)(e_th^k - e_ref^k); reward_w, reward_l; the four mean errors.
    """
    _check_batch("dpo_loss", policy_w, policy_l, ref_w, ref_l)
    ref_w, ref_l = _f32(ref_w.detach()), _f32(ref_l.detach())
    reward_w = -0.5 * beta * (_f32(policy_w) - ref_w)  # [B]
    reward_l = -0.5 * beta * (_f32(policy_l) - ref_l)
    z = reward_w - reward_l
    loss = -F.logsigmoid(z).mean()
    zd = z.detach()
    metrics = {
        "implicit_acc": (zd > 0).float().mean() + 0.5 * (zd == 0).float().mean(),
        "reward_margin": _m(zd.mean()), "reward_w": _m(reward_w.mean()), "reward_l": _m(reward_l.mean()),
        "policy_err_w": _m(policy_w.mean()), "policy_err_l": _m(policy_l.mean()),
        "ref_err_w": _m(ref_w.mean()), "ref_err_l": _m(ref_l.mean()),
    }
    return loss, metrics


def kto_loss(policy_err: torch.Tensor, ref_err: torch.Tensor, labels: torch.Tensor, *,
             beta: float = 1000.0, desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
             reference_point: torch.Tensor | float | None = None) -> tuple[torch.Tensor, Metrics]:
    """Diffusion-KTO ("kto") from single good/bad labels, preference-learning.md §2.

    Follows ``jacklishufan/diffusion-kto`` train_kto_sd_v1.5.py (halo "sigmoid", loss "kto"):
        g_i   = e_ref_i - e_th_i                      implicit reward at one (t, eps), [B]
        kl    = max(0, mean_batch g).detach()         reference point (their batch KL estimate;
                                                      pass ``reference_point`` to use an all-reduced
                                                      or running value instead)
        h_i   = sigmoid(s_i * beta * (g_i - kl)),     s_i = +1 if y_i = 1 (good) else -1
        L     = mean_i w_i (1 - h_i),                 w_i = desirable_weight | undesirable_weight
    beta = 1000 is the repo default (no 1/2 factor, unlike DPO). At init (policy == ref) L = mean w / 2.
    labels [B] in {0, 1}. Metrics: implicit_acc = mean(s (g - kl) > 0), kl, reward_good/bad (mean g).
    """
    _check_batch("kto_loss", policy_err, ref_err, labels)
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"kto_loss: labels must be 0 (bad) or 1 (good), got {labels.tolist()}")
    good = labels > 0.5
    g = _f32(ref_err.detach()) - _f32(policy_err)
    if reference_point is None:
        kl = g.detach().mean().clamp(min=0)
    else:
        kl = torch.as_tensor(reference_point, dtype=g.dtype, device=g.device).detach()
    sign = good.to(g.dtype) * 2 - 1
    inner = sign * beta * (g - kl)
    w = torch.where(good, desirable_weight, undesirable_weight).to(g.dtype)
    loss = (w * (1 - torch.sigmoid(inner))).mean()
    gd = g.detach()
    metrics = {
        "implicit_acc": (inner.detach() > 0).float().mean(), "kl": _m(kl),
        "reward_good": _m((gd * good).sum() / good.sum().clamp(min=1)),
        "reward_bad": _m((gd * ~good).sum() / (~good).sum().clamp(min=1)),
        "good_fraction": good.float().mean(),
    }
    return loss, metrics


# ---------------------------------------------------------------- consistency distillation


def lcm_per_sample(pred: torch.Tensor, target: torch.Tensor, *, loss_type: str = "l2",
                   huber_c: float = 0.001) -> torch.Tensor:
    """Per-sample LCM distillation loss in fp32, (B, C, H, W) x2 -> [B].

    l2:    l_i = mean_{c,h,w} (pred - target)^2
    huber: l_i = mean_{c,h,w} [ sqrt((pred - target)^2 + c^2) - c ]   (pseudo-Huber, c = huber_c)
    The mean over i of these equals diffusers' batch-reduced loss for equal-size samples.
    """
    diff2 = (_f32(pred) - _f32(target)) ** 2
    dims = tuple(range(1, diff2.ndim))
    if loss_type == "l2":
        return diff2.mean(dim=dims)
    if loss_type == "huber":
        return (torch.sqrt(diff2 + huber_c**2) - huber_c).mean(dim=dims)
    raise ValueError(f"lcm_per_sample: loss_type={loss_type!r}; use 'l2' or 'huber'")


def lcm_l2_loss(pred: torch.Tensor, target: torch.Tensor, *,
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, Metrics]:
    """LCM distillation, l2 ("lcm_l2"): L = mean_i w_i l2_i; pred = student f(x_{t+k}), target = f(x_t).

    weights [B] (``reward_weights``) make it reward-weighted distillation; None = plain LCD.
    Metrics: ``distill_unweighted`` = mean_i l_i.
    """
    per = lcm_per_sample(pred, target, loss_type="l2")
    return _weighted_mean(per, weights), {"distill_unweighted": _m(per.mean())}


def lcm_huber_loss(pred: torch.Tensor, target: torch.Tensor, *, weights: torch.Tensor | None = None,
                   huber_c: float = 0.001) -> tuple[torch.Tensor, Metrics]:
    """LCM distillation, pseudo-Huber ("lcm_huber"): L = mean_i w_i huber_i (see ``lcm_per_sample``)."""
    per = lcm_per_sample(pred, target, loss_type="huber", huber_c=huber_c)
    return _weighted_mean(per, weights), {"distill_unweighted": _m(per.mean())}


def reward_weights(scores: torch.Tensor, *, mode: str = "clamp", temperature: float = 0.1,
                   threshold: float | None = None) -> tuple[torch.Tensor, Metrics]:
    """Per-sample weights [B] for reward-weighted distillation, normalised to mean 1 over the batch.

    clamp:   u_i = clamp(s_i, 0, 1)                  (Lee et al. 2023: weight = reward in [0, 1])
    softmax: u_i = exp((s_i - max s) / temperature)  (batch RWR/AWR; w = B * softmax(s / tau))
    threshold (optional, both modes): u_i = 0 where s_i < threshold (RAFT-like filter; 0.5 = RORem's
    acceptance). Then w = u / mean(u). Guards, without a GPU sync:
    - all u_i equal and > 0 (e.g. all scores equal) -> w = 1 exactly, so RWD == plain distillation;
    - all u_i = 0 (all below threshold / all clamped to 0) -> w = 1 (uniform) and metric fallback = 1.
    A lower temperature concentrates the weight on the best samples; a higher one tends to uniform.
    Metrics: fallback (0/1), kept_fraction (u > 0), weight_max, ess_fraction = (sum w)^2 / (B sum w^2).
    """
    s = scores.detach().float()
    if mode == "clamp":
        u = s.clamp(0.0, 1.0)
    elif mode == "softmax":
        if not temperature > 0:
            raise ValueError(f"reward_weights: temperature={temperature} must be > 0 (try 0.1-0.2)")
        u = torch.exp((s - s.max()) / temperature)
    else:
        raise ValueError(f"reward_weights: mode={mode!r}; use 'clamp' or 'softmax'")
    if threshold is not None:
        u = torch.where(s < threshold, torch.zeros_like(u), u)
    ones = torch.ones_like(u)
    all_zero = u.sum() <= 0
    all_equal = u.max() == u.min()
    w = torch.where(all_zero | all_equal, ones, u / u.mean().clamp(min=torch.finfo(u.dtype).tiny))
    metrics = {
        "fallback": all_zero.float(), "kept_fraction": (u > 0).float().mean(), "weight_max": w.max(),
        "ess_fraction": w.sum() ** 2 / (w.numel() * (w**2).sum()),
    }
    return w, metrics


def reward_term(reward: torch.Tensor, *, scale: float) -> tuple[torch.Tensor, Metrics]:
    """RG-LCD reward term: L_R = -scale * mean_i r_i, added to the distillation loss.

    reward [B] must be differentiable w.r.t. the student (e.g. the discriminator on the student's
    one-step x0); clamp/saturate unbounded scores first, reward hacking is likely (preference §4).
    """
    return -scale * _f32(reward).mean(), {"reward_mean": _m(reward.mean())}


# ---------------------------------------------------------------- online RL (policy gradient)


def group_advantages(rewards: torch.Tensor, *, clip: float = 5.0, eps: float = 1e-6) -> tuple[torch.Tensor, Metrics]:
    """Group-baseline advantages: rewards (G, K) = G inputs x K samples each -> (G, K).

        A_gk = clamp((r_gk - mean_k r_g) / (std_k r_g + eps), -clip, clip)
    std is the population std over the group's K samples (DDPO's per-prompt z-score, here per input,
    i.e. per (source, mask)); a group whose K rewards are equal gets A = 0 (nothing to prefer).
    K must be >= 2 (one sample has no baseline). Metrics: reward_mean, reward_std (spread within
    groups, mean over groups), adv_abs_mean, adv_clipped (fraction at the clip).
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"group_advantages: rewards must be (G, K) with K >= 2, got {tuple(rewards.shape)}; "
                         "sample at least 2 results per input (train_rl.num_samples)")
    r = _f32(rewards.detach())
    mu, sd = r.mean(dim=1, keepdim=True), r.std(dim=1, unbiased=False, keepdim=True)
    z = (r - mu) / (sd + eps)
    adv = z.clamp(-clip, clip)
    return adv, {"reward_mean": _m(r.mean()), "reward_std": _m(sd.mean()), "adv_abs_mean": _m(adv.abs().mean()),
                 "adv_clipped": (z.abs() > clip).float().mean()}


def gaussian_kl_same_std(mean_p: torch.Tensor, mean_q: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean_p, std^2) || N(mean_q, std^2)) averaged over (C, H, W): (B, C, h, w) -> [B].

        KL_i = mean_{c,h,w} (mean_p - mean_q)^2 / (2 std^2)
    Both policies of one sampler step share std (it depends on the schedule only), so the KL of a
    step is this closed form (DPOK's per-step KL to the reference). Averaged like the log-probs.
    """
    d2 = (_f32(mean_p) - _f32(mean_q)) ** 2 / (2 * _f32(std) ** 2)
    return d2.mean(dim=tuple(range(1, d2.ndim)))


def _pg_metrics(log_ratio: torch.Tensor, ratio: torch.Tensor, clip_range: float) -> Metrics:
    return {"approx_kl": _m(0.5 * (log_ratio.detach() ** 2).mean()),
            "clipfrac": ((ratio.detach() - 1).abs() > clip_range).float().mean(),
            "ratio_mean": _m(ratio.mean())}


def _with_kl(loss: torch.Tensor, metrics: Metrics, kl: torch.Tensor | None, kl_coef: float):
    if kl is None:
        return loss, metrics
    return loss + kl_coef * _f32(kl).mean(), {**metrics, "kl_ref": _m(kl.mean())}


def ppo_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, *,
             clip_range: float = 1e-4, kl: torch.Tensor | None = None,
             kl_coef: float = 0.0) -> tuple[torch.Tensor, Metrics]:
    """DDPO's clipped surrogate ("ppo") on sampler steps; every input is [B] (one per transition).

        rho_i = exp(logp_i - logp_old_i)                      (log-probs: ``gaussian_log_prob``)
        L     = mean_i max(-A_i rho_i, -A_i clamp(rho_i, 1 - c, 1 + c)) + kl_coef * mean_i KL_i
    c = ``clip_range`` (DDPO 1e-4); A are detached (``group_advantages``); KL_i optional (per-step KL to
    the reference, ``gaussian_kl_same_std``). At rho = 1 (first inner step) L = -mean A and the
    gradient is REINFORCE's. Metrics: approx_kl = 0.5 mean (logp - logp_old)^2, clipfrac =
    mean(|rho - 1| > c), ratio_mean, kl_ref (when given).
    """
    _check_batch("ppo_loss", log_prob, old_log_prob, advantages)
    adv = _f32(advantages.detach())
    log_ratio = _f32(log_prob) - _f32(old_log_prob.detach())
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    return _with_kl(loss, _pg_metrics(log_ratio, ratio, clip_range), kl, kl_coef)


def reinforce_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, *,
                   clip_range: float = 1e-4, kl: torch.Tensor | None = None,
                   kl_coef: float = 0.0) -> tuple[torch.Tensor, Metrics]:
    """REINFORCE with the group baseline ("reinforce"), importance-weighted so that inner epochs
    after the first stay unbiased; every input is [B].

        L = -mean_i A_i exp(logp_i - logp_old_i) + kl_coef * mean_i KL_i
    On-policy (logp == logp_old) the value is -mean A and the gradient -mean A grad logp, which is
    REINFORCE with baseline (the baseline is inside A). No clipping: ``clip_range`` only feeds the
    clipfrac metric, so it is comparable with ``ppo_loss``.
    """
    _check_batch("reinforce_loss", log_prob, old_log_prob, advantages)
    log_ratio = _f32(log_prob) - _f32(old_log_prob.detach())
    ratio = torch.exp(log_ratio)
    loss = (-_f32(advantages.detach()) * ratio).mean()
    return _with_kl(loss, _pg_metrics(log_ratio, ratio, clip_range), kl, kl_coef)


# ---------------------------------------------------------------- registry

LOSSES: dict[str, Callable[..., tuple[torch.Tensor, Metrics]]] = {
    "mse": diffusion_loss,
    "bce": bce_loss,
    "softplus_mse": softplus_mse_loss,
    "dpo": dpo_loss,
    "kto": kto_loss,
    "lcm_l2": lcm_l2_loss,
    "lcm_huber": lcm_huber_loss,
    "ppo": ppo_loss,
    "reinforce": reinforce_loss,
}


def get_loss(name: str) -> Callable[..., tuple[torch.Tensor, Metrics]]:
    """The loss registered as ``name``; raises ValueError listing the valid names otherwise."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))} "
                         "(set the `loss` field of the stage config to one of them)") from None

