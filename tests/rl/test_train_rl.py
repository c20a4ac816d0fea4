"""The train_rl stage and its loop on a random 32 px remover (seconds each): the output is a LoRA
remover, the first inner step has ratio 1 and PPO == REINFORCE, the adapter-disabled reference equals a
frozen copy, early stopping (plateau, KL budget), bad inputs refused before any rollout, the disabled
switch, and SIGKILL + resume giving the same weights and metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rorem_core.config import ConfigError, stage_config
from rorem_core.stages import train_rl
from tests.helpers.kill import kill_after_first_checkpoint, max_weight_diff

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def _params(tmp: Path, **section) -> dict:
    """params for the 32 px fixtures: 4 steps, 3 inputs x K=2 per rollout, 4 sampler steps, oracle reward."""
    base = {"cache_dir": str(tmp / "cache"), "work_dir": str(tmp / "work"), "wandb_mode": "disabled",
            "device": "cpu", "resolution": 32, "seed": 0}
    small = {"reward": "oracle", "steps": 4, "batch_size": 8, "inputs_per_epoch": 3, "num_samples": 2,
             "sampler_steps": 4, "test_images": 4, "checkpoint_every": 2, "log_every": 1, "lora_rank": 4,
             "heldout_fraction": 0.25, "lr": 1e-3}
    return {"base": base, "train_rl": {**small, **section}}


def _cfg(tmp: Path, **section):
    return stage_config("train_rl", _params(tmp, **section))


def _run(tmp, model, data, **section):
    cfg = _cfg(tmp, **section)
    return train_rl.run(cfg, model, data / "pools" / "round-1", tmp / "out", hidden=data / "hidden" / "round-1",
                        test=data / "test")


def test_stage_writes_a_lora_remover_and_the_guard_metrics(rl_model, rl_data, tmp_path):
    from rorem_core.models.remover import Remover

    res = _run(tmp_path, rl_model, rl_data)
    assert res.steps == 4 and res.n_heldout == 3 and res.n_rollout_inputs == 9
    for key in ("heldout_reward", "test_success", "test_judged_success", "test_masked_psnr"):
        d = getattr(res, key)
        assert d["n"] > 0 and d["ci95"][0] <= d["delta"] <= d["ci95"][1]
    for k in ("reward_mean", "reward_std", "approx_kl", "clipfrac", "heldout_reward"):
        assert k in res.train_last
    assert (tmp_path / "out" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    rem = Remover.load(tmp_path / "out", cache_dir=str(tmp_path / "cache"), resolution=32)
    out = rem.remove(torch.zeros(1, 3, 32, 32), torch.ones(1, 1, 32, 32), [0], steps=2)
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def _loop(tmp, model, data, reference=None, **section):
    """An OnlineRL on a policy whose LoRA is NOT the identity (so policy != reference)."""
    from rorem_core.models.conditioning import load_prompt_embeds
    from rorem_core.models.loading import load_scheduler_config, load_vae
    from rorem_core.preference.dpo import StepContext, load_policy_unet
    from rorem_core.rl.ddpo import OnlineRL
    from rorem_core.rl.rewards import load_reward
    from rorem_core.rl.rollout import Sampling, load_pool_inputs, split_heldout
    from rorem_core.rl.sampler import DDIMSchedule

    cfg = _cfg(tmp, **section)
    unet, _, _ = load_policy_unet(model, cfg.lora_rank, cfg.lora_targets)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    vae = load_vae(model)
    inputs = load_pool_inputs(data / "pools" / "round-1", vae, 32)
    roll, held = split_heldout(inputs.ids, cfg.heldout_fraction, 0, cfg.heldout_max)
    ctx = StepContext.from_scheduler(load_scheduler_config(model), load_prompt_embeds(model, tmp / "cache"), 32, "cpu")
    smp = Sampling(ctx.cond, DDIMSchedule.make(ctx.alphas_cumprod, cfg.sampler_steps, ctx.prediction_type),
                   ctx.alphas_cumprod, cfg.eta, vae, 32, torch.device("cpu"))
    reward = load_reward("oracle", hidden=data / "hidden" / "round-1", resolution=32, success_db=20.0)
    kw = {} if reference is None else {"reference": reference}
    return OnlineRL(cfg, unet, smp, inputs, roll, held, reward, tmp / "work", **kw), unet


def test_first_inner_step_has_ratio_one_and_ppo_equals_reinforce(rl_model, rl_data, tmp_path):
    rl, unet = _loop(tmp_path, rl_model, rl_data)
    rl.before_batch(0)
    batch = rl.batch_fn(rl.entries[:8])
    losses = {}
    for name in ("ppo", "reinforce"):
        rl.loss_fn = __import__("rorem_core.training.losses", fromlist=["x"]).get_loss(name)
        loss, m = rl.compute_loss(batch, torch.Generator())
        assert abs(float(m["ratio_mean"]) - 1) < 1e-5 and float(m["approx_kl"]) < 1e-10
        assert float(m["clipfrac"]) == 0.0
        losses[name] = float(loss.detach())
    assert losses["ppo"] == pytest.approx(losses["reinforce"], abs=1e-6)


def test_adapter_disabled_reference_equals_a_frozen_copy(rl_model, rl_data, tmp_path):
    from rorem_core.models.loading import load_unet
    from rorem_core.preference.dpo import frozen_copy

    got = {}
    for name, ref in (("adapters", None), ("copy", frozen_copy(load_unet(rl_model).eval()))):
        rl, unet = _loop(tmp_path / name, rl_model, rl_data, reference=ref, kl_coef=0.5)
        rl.before_batch(0)
        loss, m = rl.compute_loss(rl.batch_fn(rl.entries[:8]), torch.Generator())
        assert float(m["kl_ref"]) > 0, "the perturbed LoRA must differ from the reference"
        loss.backward()
        grads = [p.grad.clone() for p in unet.parameters() if p.requires_grad]
        got[name] = (loss.detach(), m["kl_ref"], grads)
    (la, ka, ga), (lb, kb, gb) = got["adapters"], got["copy"]
    torch.testing.assert_close(la, lb, atol=1e-6, rtol=0)
    torch.testing.assert_close(ka, kb, atol=1e-6, rtol=0)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_kl_budget_stops_after_the_first_rollout(rl_model, rl_data, tmp_path):
    res = _run(tmp_path, rl_model, rl_data, kl_budget=1e-12, steps=20, patience=0)
    assert res.stopped_early and res.stopped_early.startswith("kl_budget") and res.steps < 20
    assert res.steps % 2 == 0 or res.rollouts == 1


def test_plateau_stops_when_held_out_reward_does_not_improve(rl_model, rl_data, tmp_path):
    from rorem_core.rl import rewards

    class Constant:
        name, success_threshold = "constant", 0.5

        def __call__(self, results, sources, masks, ids):
            return torch.arange(len(ids), dtype=torch.float32) % 2   # a group baseline still has a spread

    rewards.register("constant", lambda **_: Constant())
    try:
        res = _run(tmp_path, rl_model, rl_data, reward="constant", patience=1, steps=30)
    finally:
        rewards.REWARDS.pop("constant")
    # rollout 0 trained, then the held-out reward of the new weights (rollout 1's start) did not beat it
    assert res.stopped_early and res.stopped_early.startswith("plateau") and res.rollouts == 1 and res.steps < 30


@pytest.mark.parametrize("section, match", [
    ({"num_samples": 1}, r"train_rl.*num_samples=1.*K >= 2"),
    ({"eta": 0.0}, r"train_rl.*eta=0.0.*no density.*eta > 0"),
])
def test_bad_config_is_refused_naming_the_parameter(tmp_path, section, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(tmp_path, **section)


def test_empty_pool_and_foreign_reward_model_are_refused_before_any_rollout(rl_model, rl_data, tmp_path,
                                                                            random_tiny_model, monkeypatch):
    from rorem_core.reward.discriminator import DiscriminatorInfo, build_discriminator, save_discriminator
    from rorem_core.rl import ddpo

    monkeypatch.setattr(ddpo, "collect_rollout", lambda *a, **k: pytest.fail("a rollout ran"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "meta.json").write_text("[]")
    cfg = _cfg(tmp_path)
    with pytest.raises(ValueError, match=r"pool .* has no inputs.*--pool"):
        train_rl.run(cfg, rl_model, empty, tmp_path / "out", hidden=rl_data / "hidden" / "round-1")
    other = random_tiny_model(64)             # a discriminator built on another base
    disc = build_discriminator(other, cache_dir=tmp_path / "cache", info=DiscriminatorInfo(base=str(other), mode="full",
                                                                                          resolution=64))
    save_discriminator(disc, tmp_path / "disc", other)
    with pytest.raises(ValueError, match=r"reward model .* trained on base .* remover .*Pass the discriminator"):
        train_rl.run(_cfg(tmp_path, reward="discriminator"), rl_model, rl_data / "pools" / "round-1", tmp_path / "out",
                     discriminator=tmp_path / "disc")
    with pytest.raises(ValueError, match=r"reward=oracle needs .*hidden"):
        train_rl.run(cfg, rl_model, rl_data / "pools" / "round-1", tmp_path / "out")
    with pytest.raises(ValueError, match=r"reward=judge needs .*hidden"):
        train_rl.run(_cfg(tmp_path, reward="judge"), rl_model, rl_data / "pools" / "round-1", tmp_path / "out")
    with pytest.raises(ValueError, match=r"not a registered reward model"):
        train_rl.run(_cfg(tmp_path, reward="human"), rl_model, rl_data / "pools" / "round-1", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_discriminator_on_a_base_ref_rewards_a_remover_on_that_base(rl_model, tmp_path):
    """The SDXL preset's models/base is a ref (pipeline + bootstrap.sdxl_unet), not the pipeline folder:
    a discriminator trained on it and a remover on it share the base (found by the full-size rehearsal)."""
    from rorem_core.models.loading import write_ref
    from rorem_core.reward.discriminator import DiscriminatorInfo, build_discriminator, save_discriminator
    from rorem_core.rl.rewards import DiscriminatorReward

    base = tmp_path / "models" / "base"
    base.mkdir(parents=True)
    write_ref(base, rl_model, unet=str(rl_model / "unet"), lora=None)
    disc = build_discriminator(base, cache_dir=tmp_path / "cache", info=DiscriminatorInfo(base=str(base), mode="full",
                                                                                         resolution=32))
    save_discriminator(disc, tmp_path / "models" / "disc", base)
    remover = _lora_remover(base, tmp_path / "models" / "remover")
    reward = DiscriminatorReward.load(tmp_path / "models" / "disc", remover=remover, cache_dir=str(tmp_path / "cache"),
                                      resolution=32, device="cpu")
    scores = reward(torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 32, 32), torch.ones(2, 1, 32, 32), ["a", "b"])
    assert torch.as_tensor(scores).isfinite().all()


def test_a_pool_too_small_for_a_heldout_input_trains_and_reports_none(rl_model, rl_data, tmp_path):
    """heldout_fraction * pool rounds to 0 (the SDXL rehearsal: 4 inputs x 0.1): no held-out metric, no crash."""
    res = _run(tmp_path, rl_model, rl_data, heldout_fraction=0.02, steps=2)
    assert res.steps == 2 and res.n_heldout == 0 and res.heldout_reward["n"] == 0
    assert (tmp_path / "out" / "lora" / "pytorch_lora_weights.safetensors").is_file()


def test_disabled_stage_writes_a_skipped_marker(rl_model, rl_data, tmp_path):
    res = _run(tmp_path, rl_model, rl_data, enabled=False)
    assert not res.enabled and json.loads((tmp_path / "out" / train_rl.SKIPPED).read_text())


def test_a_step_samples_every_rollout_any_of_its_processes_trains_on():
    """Global micro-batches: 5 per rollout, 2 per step (2 processes, or 1 with grad_accum 2). The step of
    micro-batches 4 and 5 straddles rollouts 0 and 1: both are sampled at its start, by every process."""
    from rorem_core.rl.ddpo import step_rollouts

    assert [list(step_rollouts(g, 2, 5)) for g in range(8)] == [[0], [0], [0], [0], [0, 1], [0, 1], [1], [1]]
    assert list(step_rollouts(7, 4, 2)) == [2, 3] and list(step_rollouts(3, 1, 5)) == [0]


def test_processes_that_do_not_share_the_work_dir_stop_before_any_rollout(rl_model, rl_data, tmp_path, monkeypatch):
    """Sampling is collective: processes that see different rollout files (no shared work dir) would sample
    apart and wait for each other forever; they stop with the fix instead."""
    from rorem_core.parallel import Shards
    from rorem_core.rl import ddpo

    class Apart(Shards):              # process 0 of 2; process 1 sees the opposite
        def gather(self, obj):
            return [obj, not obj]

    rl, _ = _loop(tmp_path, rl_model, rl_data)
    rl.sh = Apart(0, 2)
    monkeypatch.setattr(ddpo, "collect_rollout", lambda *a, **k: pytest.fail("a rollout ran"))
    with pytest.raises(RuntimeError, match=r"rollout-0.safetensors exists for process\(es\) \[1\] of 2 only.*"
                                           r"base.work_dir"):
        rl.before_batch(0)


def _cmd(tmp: Path, model: Path, data: Path) -> list[str]:
    p = tmp / "params.yaml"
    p.write_text(yaml.safe_dump(_params(tmp, steps=8, checkpoint_every=2)))
    return [sys.executable, "-m", "rorem_core.stages.train_rl", "--params", str(p), "--init", str(model),
            "--pool", str(data / "pools" / "round-1"), "--hidden", str(data / "hidden" / "round-1"),
            "--test", str(data / "test"), "--out", str(tmp / "out"), "--metrics", str(tmp / "metrics.json")]


@pytest.mark.slow
def test_sigkill_during_train_rl_then_rerun_matches_an_uninterrupted_run(rl_model, rl_data, tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    ref.mkdir(), killed.mkdir()
    r = subprocess.run(_cmd(ref, rl_model, rl_data), env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    # killed in the middle of a rollout: after checkpoint 2 or later, a rollout spans 3 steps here
    kill_after_first_checkpoint(_cmd(killed, rl_model, rl_data), killed / "work", ENV)
    assert not (killed / "out").exists()
    r = subprocess.run(_cmd(killed, rl_model, rl_data), env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (killed, ref))
    assert got["resumed_from"] >= 2
    assert max_weight_diff(ref / "out", killed / "out") < 1e-6
    for d in (got, want):
        d.pop("resumed_from"), d.pop("out_dir")
    assert _flat(got) == pytest.approx(_flat(want), abs=1e-6)     # the metric history travels in the checkpoints


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, list):
            out.update({f"{prefix}{k}.{i}": x for i, x in enumerate(v)})
        elif v is not None and not isinstance(v, str):
            out[f"{prefix}{k}"] = v
    return out


def _lora_remover(base: Path, out: Path) -> Path:
    """A LoRA remover on ``base`` whose adapter is not the identity (B perturbed from a fixed seed)."""
    from rorem_core.models.loading import load_unet, write_ref
    from rorem_core.models.unet import add_lora, save_lora

    unet = load_unet(base)
    add_lora(unet, 4, seed=1)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    out.mkdir(parents=True)
    save_lora(unet, out / "lora")
    write_ref(out, base, unet=None, lora="lora")
    return out


def test_rl_on_a_lora_remover_stores_only_its_adapter_and_checkpoints_no_base(rl_model, rl_data, tmp_path):
    from safetensors import safe_open

    init = _lora_remover(rl_model, tmp_path / "models" / "remover")
    cfg = _cfg(tmp_path, steps=3)      # checkpoint_every 2: checkpoint-2 is kept (the last step saves none)
    train_rl.run(cfg, init, rl_data / "pools" / "round-1", tmp_path / "models" / "rl",
                 hidden=rl_data / "hidden" / "round-1", test=rl_data / "test")
    out = tmp_path / "models" / "rl"
    files = sorted(f.relative_to(out).as_posix() for f in out.rglob("*") if f.is_file())
    assert files == ["lora/pytorch_lora_weights.safetensors", "rorem_model.json", "train_summary.json"]
    assert json.loads((out / "rorem_model.json").read_text())["loras"] == ["../remover/lora", "lora"]
    unet_bytes = sum(f.stat().st_size for f in (rl_model / "unet").glob("*.safetensors"))
    ckpt = next((tmp_path / "work").rglob("checkpoint-2"))
    for d in (out, ckpt):
        for f in d.rglob("*.safetensors"):
            with safe_open(str(f), framework="pt") as h:
                assert all(".lora_A." in k or ".lora_B." in k for k in h.keys()), f
        assert sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) < unet_bytes, d
