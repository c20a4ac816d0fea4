"""Plain-data configs the stage configs nest: the embedded default data, the tiny preset's model
sizes, and the LoRA target module lists. Pure pydantic: importing a config imports no model code."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# attention-only LoRA (HF-DPO, RORem's discriminator): the remover's and DPO's default targets
ATTN_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
# RORem's LCM LoRA targets (RORem train_RORem_lcm.py); module names absent from a UNet are skipped by peft
LCM_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
               "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj"]


class SyntheticConfig(BaseModel):
    """Embedded default data (bootstrap stage). Counts are scenes; fractions are of that split."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seed: int = 0                      # global salt: changes every split at once
    size: int = Field(64, ge=16)       # image side, px (lengths scale by size/64)
    n_seed: int = Field(2000, ge=1)    # seed training triplets (data/seed)
    n_test: int = Field(400, ge=1)     # held-out test triplets (data/test)
    pool_size: int = Field(200, ge=1)  # (source, mask) inputs per round pool (data/pools/round-N)
    n_pools: int = Field(3, ge=0)      # number of round pools (rounds 1..n_pools)
    seed_hard_fraction: float = Field(0.1, ge=0, le=1)  # share of hard scenes in the seed triplets
    pool_hard_fraction: float = Field(0.8, ge=0, le=1)  # share of hard scenes in every pool
    test_hard_fraction: float = Field(0.5, ge=0, le=1)  # share of hard scenes in the test split
    easy_shadow_prob: float = Field(0.1, ge=0, le=1)    # cast-shadow probability, easy band
    hard_shadow_prob: float = Field(0.6, ge=0, le=1)    # cast-shadow probability, hard band
    # texture lengths (periods, cells, dot size, noise correlation) x this, edges softened to this
    # many px: 4 makes every texture one the tiny autoencoder's 16x16 latent can hold (docs/judge.md)
    texture_scale: float = Field(1.0, ge=1, le=16)

    def salt(self, split: str) -> str:
        return f"{self.seed}:{split}"


class TinyPresetConfig(BaseModel):
    """Sizes of the tiny SDXL-architecture components (all on CPU in minutes)."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 0                                   # init seed of every random weight
    unet_channels: list[int] = Field(default=[32, 64, 64])   # block_out_channels
    layers_per_block: int = 1
    norm_num_groups: int = 8                        # 32 groups on 32 channels = instance norm (slow to learn)
    attention_head_dim: int = 4
    text_hidden: int = 32                           # each CLIP encoder; cross_attention_dim = 2x this
    text_layers: int = 2
    addition_time_embed_dim: int = 8
    ae_factor: int = 4                              # analytic autoencoder down-scale (power of 2)
    ae_scaling_factor: float = 2.0                  # latents x2 span about [-2, 2]
    prediction_type: str = "v_prediction"           # v trains far faster on CPU than epsilon (§6.4)
