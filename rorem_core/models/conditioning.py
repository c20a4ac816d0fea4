"""Empty-prompt SDXL conditioning, computed once and cached; text encoders never stay in memory.

RORem always trains and samples with the prompt "". SDXL conditioning for it is:
  encoder_hidden_states (1, 77, D1+D2) = concat(penultimate hidden of CLIP-L, of CLIP-bigG),
  text_embeds (1, P)                   = projected pooled output of text_encoder_2,
  time_ids (B, 6)                      = (H, W, crop_top=0, crop_left=0, H, W), built per batch so a
                                         smaller last batch works (RORem precomputes it for the
                                         full batch size and crashes there).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rorem_core.io import atomic_path, check_safetensors
from rorem_core.models.folders import weights_variant
from rorem_core.models.loading import resolve_ref

log = logging.getLogger(__name__)
EMBED_FILE = "prompt_embeds.safetensors"


@dataclass
class PromptEmbeds:
    hidden: torch.Tensor   # (1, 77, D) encoder_hidden_states for one sample
    pooled: torch.Tensor   # (1, P) text_embeds for one sample

    def batch(self, n: int, resolution: tuple[int, int], device=None, dtype=None):
        """(encoder_hidden_states, added_cond_kwargs) for a batch of ``n`` (any n >= 1)."""
        h, w = resolution
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=dtype or self.hidden.dtype, device=device)
        hidden = self.hidden.to(device=device, dtype=dtype).expand(n, -1, -1)
        pooled = self.pooled.to(device=device, dtype=dtype).expand(n, -1)
        return hidden, {"text_embeds": pooled, "time_ids": time_ids.expand(n, -1)}


@torch.no_grad()
def encode_empty_prompt(base: str) -> PromptEmbeds:
    """Run both tokenizers/text encoders once on "" (loads and frees them)."""
    return encode_prompt(base, "")


@torch.no_grad()
def encode_prompt(base: str, prompt: str) -> PromptEmbeds:
    """Both tokenizers/text encoders on ``prompt`` (SDXL's layout; RORem's quality prompt for CFG)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    hiddens, pooled = [], None
    for tok_sub, te_sub, te_cls in (("tokenizer", "text_encoder", CLIPTextModel),
                                     ("tokenizer_2", "text_encoder_2", CLIPTextModelWithProjection)):
        tok = CLIPTokenizer.from_pretrained(base, subfolder=tok_sub)
        te = te_cls.from_pretrained(base, subfolder=te_sub, variant=weights_variant(Path(base) / te_sub)).eval()
        ids = tok([prompt], padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        out = te(ids, output_hidden_states=True)
        hiddens.append(out.hidden_states[-2])         # penultimate layer, as SDXL
        if te_cls is CLIPTextModelWithProjection:
            pooled = out.text_embeds
        del te
    return PromptEmbeds(hidden=torch.cat(hiddens, dim=-1).float(), pooled=pooled.float())


def load_prompt_embeds(ref: str | Path, cache_dir: str | Path, prompt: str = "") -> PromptEmbeds:
    """Prompt embeddings (default the empty prompt): from ``<base>/prompt_embeds.safetensors`` if shipped
    (empty prompt only), else a cache file keyed by the base ref and the prompt, else computed once."""
    base = resolve_ref(ref).base
    key = base if prompt == "" else base + "\0" + prompt     # the empty prompt keeps its old cache key
    candidates = ([Path(base) / EMBED_FILE] if prompt == "" else []) + \
        [Path(cache_dir) / "prompt" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"]
    for f in candidates:
        if f.is_file():
            check_safetensors(f, fix=f"delete {f} if it is a cache file (it is recomputed), else restore it "
                                     "with `dvc checkout`")
            t = load_file(str(f))
            return PromptEmbeds(hidden=t["hidden"], pooled=t["pooled"])
    emb = encode_prompt(base, prompt)
    save_prompt_embeds(candidates[-1], emb)
    return emb


def save_prompt_embeds(path: str | Path, emb: PromptEmbeds) -> None:
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({"hidden": emb.hidden.contiguous(), "pooled": emb.pooled.contiguous()}, str(tmp))
