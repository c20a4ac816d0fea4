"""A fixed analytic autoencoder for the ``tiny`` preset, behind AutoencoderKL's interface.

Why: on 2 CPU cores a tiny learned VAE reaches only ~17 dB in minutes (below a mean-colour
predictor), which caps any remover below the oracle threshold. Area-downsampling by ``f`` and
bicubic upsampling has a ~37.5 dB ceiling at f=4 on the synthetic data
(docs/foundation.md). The remover (a real SDXL-architecture UNet) is what
learns; the autoencoder is a fixed, exactly reproducible stand-in, as SDXL's VAE is a fixed
pretrained part for the real preset.

Interface (what our code and diffusers pipelines use):
  ``encode(x).latent_dist.sample()/.mode()``, ``decode(z).sample``, ``config.scaling_factor``,
  ``config.block_out_channels`` (diffusers derives the scale factor as 2**(len-1)), ``dtype``.
Latent channels = RGB + luma (4, as SDXL). Saved/loaded with ``save_pretrained``/``from_pretrained``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin

# ITU-R BT.601 luma weights: the 4th latent channel, so latents have SDXL's 4 channels.
_LUMA = (0.299, 0.587, 0.114)


class AnalyticAutoencoder(ModelMixin, ConfigMixin):
    """Area-down x f (RGB + luma) encoder, bicubic-up decoder. No trainable parameters."""

    config_name = "config.json"
    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(self, in_channels: int = 3, latent_channels: int = 4,
                 block_out_channels: tuple[int, ...] = (4, 4, 4), scaling_factor: float = 2.0,
                 shift_factor: float = 0.0, force_upcast: bool = False, sample_size: int = 64):
        super().__init__()
        if latent_channels != 4 or in_channels != 3:
            raise ValueError("AnalyticAutoencoder maps RGB (3) to RGB+luma (4) latents; "
                             f"got in_channels={in_channels}, latent_channels={latent_channels}")
        proj = torch.zeros(4, 3)
        proj[:3] = torch.eye(3)
        proj[3] = torch.tensor(_LUMA)
        # A frozen parameter (not a buffer) so ModelMixin's dtype/device and save/load see weights.
        self.proj = torch.nn.Parameter(proj, requires_grad=False)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """x: (B, 3, H, W) in [-1, 1] -> posterior over (B, 4, H/f, W/f) with zero variance."""
        f = self.downscale
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not divisible by the "
                             f"autoencoder factor {f}; use a resolution that is a multiple of {f}")
        z = torch.einsum("ck,bkhw->bchw", self.proj.to(x.dtype), F.avg_pool2d(x, f))
        dist = DiagonalGaussianDistribution(torch.cat([z, torch.full_like(z, -30.0)], 1),
                                            deterministic=True)
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        """z: (B, 4, h, w) unscaled latents -> (B, 3, h*f, w*f); luma is redundant and ignored."""
        x = F.interpolate(z[:, :3], scale_factor=self.downscale, mode="bicubic", align_corners=False)
        return DecoderOutput(sample=x) if return_dict else (x,)

    def forward(self, sample: torch.Tensor, return_dict: bool = True):
        x = self.decode(self.encode(sample).latent_dist.mode()).sample
        return DecoderOutput(sample=x) if return_dict else (x,)
