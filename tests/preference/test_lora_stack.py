"""LoRA stacks in model refs: a LoRA stage on a remover that is itself base + adapters (DPO on a LoRA
remover, distillation on the DPO remover) stores only its own adapter and a ref naming the parent's
stack; loading the stack gives what the fused UNet the stages used to write gave; refs written before
stacks still load; a LoRA run's checkpoint holds no base weights. 32 px random remover, seconds each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from rorem_core.config import stage_config
from rorem_core.models.folders import ModelFolderError
from rorem_core.models.loading import REF_FILE, load_unet, load_unet_fused, resolve_ref
from rorem_core.stages import distill, train_dpo
from rorem_core.training.sft import train_remover

# float tolerance of "equal": the stacked and the fused path run the same fp32 fuses on the same
# device, so they are expected bitwise equal; the bound only allows for a peft that orders its sums
# differently between the two loads
ATOL, RTOL = 1e-6, 1e-5


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _weight_keys(folder: Path) -> set[str]:
    keys = set()
    for f in folder.rglob("*.safetensors"):
        with safe_open(str(f), framework="pt") as h:
            keys |= set(h.keys())
    return keys


@pytest.fixture(scope="module")
def chain(small_model, small_data, tmp_path_factory) -> dict[str, Path]:
    """base -> LoRA remover (train_remover, mode lora) -> DPO on it -> LCM distilled from the DPO remover."""
    from tests.preference.conftest import make_params

    tmp = tmp_path_factory.mktemp("stack")
    params = make_params(tmp, train_remover={"mode": "lora", "lora_rank": 4, "steps": 2, "batch_size": 4, "lr_warmup_steps": 0,
                                             "lr": 1e-3, "log_every": 1},
                         train_dpo={"steps": 2, "batch_size": 4, "lr": 1e-3, "log_every": 1, "lora_rank": 4,
                                    "val_fraction": 0.0},
                         distill={"steps": 2, "batch_size": 4, "lr": 1e-3, "lora_rank": 4, "log_every": 1})
    models = tmp / "models"
    out = {"base": small_model, "sft": models / "remover", "dpo": models / "dpo", "lcm": models / "lcm"}
    train_remover(stage_config("train_remover", params), small_model, [small_data / "meta.json"], out["sft"])
    train_dpo.run(stage_config("train_dpo", params), out["sft"], out["dpo"], pairs=[small_data])
    distill.run(stage_config("distill", params), out["dpo"], out["lcm"], train=[small_data])
    return out


def test_lora_stages_on_a_lora_remover_write_only_their_adapter(chain):
    unet_bytes = _bytes(chain["base"] / "unet")
    for kind, parents in (("sft", []), ("dpo", ["sft"]), ("lcm", ["sft", "dpo"])):
        d = chain[kind]
        files = sorted(f.relative_to(d).as_posix() for f in d.rglob("*") if f.is_file())
        assert files == ["lora/pytorch_lora_weights.safetensors", REF_FILE, "train_summary.json"], (kind, files)
        keys = _weight_keys(d)
        assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys), f"{kind}: non-adapter weights saved"
        lora_bytes = (d / "lora" / "pytorch_lora_weights.safetensors").stat().st_size
        assert _bytes(d) < lora_bytes + 64 * 1024 < unet_bytes, kind
        ref = json.loads((d / REF_FILE).read_text())
        want = [f"../{chain[p].name}/lora" for p in parents] + ["lora"]
        assert ref["unet"] is None and ref["loras"] == want, ref
        r = resolve_ref(d)
        assert r.loras == tuple(str((chain[p] / "lora").resolve()) for p in [*parents, kind])
        assert Path(r.unet).resolve() == chain["base"].resolve()


def _forward(unet) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 9, unet.config.sample_size, unet.config.sample_size, generator=gen)
    hidden = torch.randn(2, 77, unet.config.cross_attention_dim, generator=gen)
    added = {"text_embeds": torch.randn(2, unet.config.projection_class_embeddings_input_dim - 6 *
                                        unet.config.addition_time_embed_dim, generator=gen),
             "time_ids": torch.rand(2, 6, generator=gen) * 32}
    with torch.no_grad():
        return unet(x, torch.tensor([10, 500]), encoder_hidden_states=hidden, added_cond_kwargs=added).sample


def _old_fused_layout(parent: Path, new: Path, out: Path) -> Path:
    """What a LoRA stage on a LoRA parent wrote before stacks: the fused parent UNet in unet/, its own
    adapter in lora/, ``{"base": parent, "unet": "unet", "lora": "lora"}``."""
    out.mkdir()
    load_unet_fused(parent).save_pretrained(out / "unet")
    shutil.copytree(new / "lora", out / "lora")
    (out / REF_FILE).write_text(json.dumps({"base": str(parent), "unet": "unet", "lora": "lora"}))
    return out


def test_stacked_ref_equals_the_fused_path_and_old_refs_still_load(chain, tmp_path):
    old_dpo = _old_fused_layout(chain["sft"], chain["dpo"], tmp_path / "old_dpo")
    old_lcm = _old_fused_layout(old_dpo, chain["lcm"], tmp_path / "old_lcm")
    assert resolve_ref(old_lcm).loras == (str((old_lcm / "lora").resolve()),)
    for new, old in ((chain["dpo"], old_dpo), (chain["lcm"], old_lcm)):
        a, b = load_unet_fused(new).state_dict(), load_unet_fused(old).state_dict()
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=ATOL, rtol=RTOL, msg=k)
        # the top adapter as loaded (not fused) and the UNet under it agree too
        torch.testing.assert_close(_forward(load_unet(new)), _forward(load_unet(old)), atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(_forward(load_unet(new, with_lora=False)), _forward(load_unet(old, with_lora=False)),
                                   atol=ATOL, rtol=RTOL)
    # a pre-stack LoRA remover ref ({"unet": null, "lora": "lora"} on the base) loads as before
    old_sft = tmp_path / "old_sft"
    shutil.copytree(chain["sft"] / "lora", old_sft / "lora")
    (old_sft / REF_FILE).write_text(json.dumps({"base": str(chain["base"]), "unet": None, "lora": "lora"}))
    assert resolve_ref(old_sft).loras == (str((old_sft / "lora").resolve()),)
    torch.testing.assert_close(_forward(load_unet_fused(old_sft)), _forward(load_unet_fused(chain["sft"])), atol=0, rtol=0)


def test_export_of_a_stacked_model_is_standalone(chain, tmp_path):
    from rorem_core.models.export import build_pipeline

    pipe = build_pipeline(chain["lcm"], "lcm")
    pipe.save_pretrained(str(tmp_path / "out"))
    from diffusers import UNet2DConditionModel

    exported = UNet2DConditionModel.from_pretrained(str(tmp_path / "out" / "unet"))
    assert not any("lora" in n for n, _ in exported.named_parameters())
    torch.testing.assert_close(_forward(exported), _forward(load_unet_fused(chain["lcm"])), atol=ATOL, rtol=RTOL)


def test_a_missing_adapter_of_the_stack_is_named_with_the_fix(chain, tmp_path):
    for kind in ("sft", "dpo"):   # a clone where the remover stage's output was not checked out
        shutil.copytree(chain[kind], tmp_path / chain[kind].name)
    shutil.rmtree(tmp_path / "remover" / "lora")
    with pytest.raises(ModelFolderError, match=r"remover/lora, which is missing.*dvc checkout"):
        load_unet(tmp_path / "dpo")


def test_a_lora_checkpoint_holds_only_the_adapter(chain, small_data, params, tmp_path):
    p = params(train_dpo={"steps": 2, "batch_size": 4, "lr": 1e-3, "log_every": 1, "lora_rank": 4,
                          "val_fraction": 0.0, "checkpoint_every": 1})
    train_dpo.run(stage_config("train_dpo", p), chain["sft"], tmp_path / "dpo", pairs=[small_data])
    ckpts = list((tmp_path / "work").rglob("checkpoint-1"))
    assert len(ckpts) == 1
    keys = _weight_keys(ckpts[0])
    assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys), sorted(keys)[:5]
    assert _bytes(ckpts[0]) < _bytes(chain["base"] / "unet")


def test_a_lora_remover_trained_on_a_lora_remover_stacks_across_rounds(chain, small_data, params, tmp_path):
    """Round N+1's LoRA remover on round N's: trained on the fused init, stores only its adapter."""
    p = params(train_remover={"mode": "lora", "lora_rank": 4, "steps": 1, "batch_size": 4, "lr_warmup_steps": 0})
    out = tmp_path / "remover2"
    train_remover(stage_config("train_remover", p), chain["sft"], [small_data / "meta.json"], out)
    assert resolve_ref(out).loras == (str((chain["sft"] / "lora").resolve()), str((out / "lora").resolve()))
    assert not (out / "unet").exists()
    assert _forward(load_unet_fused(out)).isfinite().all()
