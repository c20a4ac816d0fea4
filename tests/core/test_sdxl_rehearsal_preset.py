"""params.sdxl-rehearsal.yaml is params.sdxl.yaml with only sizes, counts and CPU precision changed,
each change commented (`# rehearsal:`); everything else (LoRA vs full aside, see docs/sdxl.md) is the
SDXL preset's own value."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# (section, key) the rehearsal may override; "*" = any section
ALLOWED = {("base", "resolution"), ("bootstrap", "sdxl_pretrained"), ("bootstrap", "sdxl_unet"),
           ("bootstrap", "synthetic"), ("train_remover", "mode"), ("select", "fraction"), ("report", "title"),
           *{("*", k) for k in ("steps", "batch_size", "grad_accum", "eval_batch_size", "log_every",
                                "mixed_precision", "frozen_dtype", "dtype")},
           # train_rl's counts: samples per input, inputs per rollout, sampler steps, held-out and test images
           *{("train_rl", k) for k in ("num_samples", "inputs_per_epoch", "sampler_steps", "sample_batch_size",
                                       "heldout_max", "test_images")}}


def _flat(d: dict) -> dict:
    return {(s, k): v for s, sec in d.items() if isinstance(sec, dict) for k, v in sec.items()}


def test_rehearsal_differs_from_the_sdxl_preset_only_in_sizes_counts_and_precision():
    sdxl = _flat(yaml.safe_load((REPO / "params.sdxl.yaml").read_text()))
    reh = _flat(yaml.safe_load((REPO / "params.sdxl-rehearsal.yaml").read_text()))
    assert sdxl.keys() == reh.keys(), "the rehearsal states exactly the SDXL preset's keys"
    changed = {k for k in sdxl if sdxl[k] != reh[k]}
    assert changed, "the rehearsal overrides nothing?"
    bad = [k for k in changed if k not in ALLOWED and ("*", k[1]) not in ALLOWED]
    assert not bad, f"overrides outside sizes/counts/precision: {bad}"
    precision = {k: reh[k] for k in changed if k[1] in ("mixed_precision", "frozen_dtype", "dtype")}
    assert set(precision.values()) <= {"no", "fp32"}, "precision overrides only go to fp32 (CPU arithmetic)"


def test_every_override_is_commented():
    sdxl = yaml.safe_load((REPO / "params.sdxl.yaml").read_text())
    lines = (REPO / "params.sdxl-rehearsal.yaml").read_text().splitlines()
    section = None
    for line in lines:
        if line and not line.startswith((" ", "#")):
            section = line.split(":")[0]
        elif line.startswith("  ") and not line.startswith("   ") and ":" in line and section in sdxl:
            key, value = line.strip().split(":", 1)
            stated = yaml.safe_load(value.split("#")[0]) if value.split("#")[0].strip() else None
            ref = (sdxl[section] or {}).get(key)
            if isinstance(ref, dict):
                continue
            if stated != ref:
                assert "# rehearsal:" in line, f"[{section}] {key}: overridden without a `# rehearsal:` comment"
