"""Corrupt artifacts (issue 7 §2): a truncated training checkpoint, model output, latent-cache entry
or frozen Label Studio export is detected and refused with the file named and the way to recover;
nothing damaged is ever loaded silently.

Chosen behaviour for training checkpoints: every ``checkpoint-N`` carries a manifest (size and
sha256 of each file) in ``train_state.json``, written last; resume skips a damaged checkpoint with a
warning naming the bad file and falls back to the previous complete one (or to step 0). Training is
a pure function of (seed, step), so the final weights equal an uninterrupted run's.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from annotation.config import AnnotationConfig
from annotation.pull import SnapshotCorrupt, load_snapshot, pull_round, verify_snapshots
from rorem_core.config import stage_config
from rorem_core.data.latents import CacheCorrupt, load_entry
from rorem_core.io import ArtifactCorrupt, check_safetensors
from rorem_core.models.loading import load_lora_into, load_unet
from rorem_core.training.sft import train_remover
from rorem_core.training.trainer import checkpoint_problems


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _cfg(tmp: Path, **kw):
    base = {"cache_dir": str(tmp / "cache"), "work_dir": str(tmp / "work"), "wandb_mode": "disabled",
            "device": "cpu", "resolution": 32, "seed": 0}
    train = {"steps": 6, "batch_size": 4, "lr": 1e-3, "lr_warmup_steps": 0, "lr_schedule": "constant",
             "checkpoint_every": 2, "checkpoints_keep": 3, "log_every": 1, "augment_dihedral": True, **kw}
    return stage_config("train_remover", {"base": base, "train_remover": train})


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_unet(out).state_dict()


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def trained(tiny_model, tiny_triplets, tmp_path_factory):
    """One uninterrupted 6-step run (checkpoints at 2 and 4): its tmp dir, config and output."""
    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = _cfg(tmp)
    train_remover(cfg, tiny_model, [tiny_triplets], tmp / "ref")
    ckpts = sorted((tmp / "work").glob("train_remover/*/checkpoints/checkpoint-*"))
    assert [p.name for p in ckpts] == ["checkpoint-2", "checkpoint-4"]
    return tmp, cfg, tmp / "ref"


def test_checkpoint_manifest_catches_truncation_appending_and_edits(trained, tmp_path):
    import shutil

    src = next((trained[0] / "work").glob("train_remover/*/checkpoints/checkpoint-2"))
    state = json.loads((src / "train_state.json").read_text())
    assert {"model.safetensors", "optimizer.bin", "scheduler.bin"} <= set(state["files"])
    for damage, expect in [("truncate", "truncated"), ("append", "bytes"), ("flip", "sha256"),
                           ("delete", "missing")]:
        ck = tmp_path / damage / "checkpoint-2"
        shutil.copytree(src, ck)
        f = ck / "optimizer.bin"
        if damage == "truncate":
            _truncate(f)
        elif damage == "append":
            f.write_bytes(f.read_bytes() + b"\0")
        elif damage == "flip":
            data = bytearray(f.read_bytes())
            data[len(data) // 2] ^= 0xFF
            f.write_bytes(bytes(data))
        else:
            f.unlink()
        problems = checkpoint_problems(ck)
        assert len(problems) == 1 and str(f) in problems[0] and expect in problems[0], (damage, problems)
    assert checkpoint_problems(src) == []


def test_truncated_checkpoint_is_skipped_and_the_run_ends_with_the_same_weights(
        trained, tiny_model, tiny_triplets, caplog):
    tmp, cfg, ref = trained
    ckpt_root = next((tmp / "work").glob("train_remover/*/checkpoints"))
    bad = ckpt_root / "checkpoint-4" / "model.safetensors"
    _truncate(bad)
    caplog.set_level(logging.WARNING, logger="rorem_core.training.trainer")
    res = train_remover(cfg, tiny_model, [tiny_triplets], tmp / "resumed")
    assert res.resumed_from == 2, "the damaged checkpoint-4 must not be loaded; checkpoint-2 is the fallback"
    warning = caplog.text
    assert str(bad) in warning and "truncated" in warning and "falling back" in warning
    assert _max_diff(_weights(ref), _weights(tmp / "resumed")) < 1e-6
    assert checkpoint_problems(ckpt_root / "checkpoint-4") == []      # rewritten when step 4 came again

    # every checkpoint damaged: train from step 0, still the same weights
    _truncate(ckpt_root / "checkpoint-2" / "optimizer.bin")
    (ckpt_root / "checkpoint-4" / "train_state.json").write_text('{"step": 4, "losses": [')
    caplog.clear()
    res = train_remover(cfg, tiny_model, [tiny_triplets], tmp / "scratch")
    assert res.resumed_from == 0
    assert "optimizer.bin" in caplog.text and "train_state.json is unreadable" in caplog.text
    assert _max_diff(_weights(ref), _weights(tmp / "scratch")) < 1e-6


def test_truncated_model_output_is_refused_naming_the_file_and_the_fix(trained, tmp_path):
    import shutil

    out = tmp_path / "remover"
    shutil.copytree(trained[2], out)
    weights = out / "unet" / "diffusion_pytorch_model.safetensors"
    _truncate(weights, 0.9)
    for load in (load_unet, lambda ref: __import__("rorem_core.models.remover", fromlist=["Remover"]).Remover.load(
            ref, cache_dir=str(tmp_path / "cache"), resolution=32)):
        with pytest.raises(ArtifactCorrupt) as e:
            load(out)
        assert str(weights) in str(e.value) and "dvc checkout" in str(e.value) and "truncated" in str(e.value)
    # a LoRA file: appended garbage is refused too
    lora = tmp_path / "lora"
    lora.mkdir()
    from safetensors.torch import save_file

    save_file({"unet.x.lora.down.weight": torch.zeros(2, 3)}, str(lora / "pytorch_lora_weights.safetensors"))
    check_safetensors(lora / "pytorch_lora_weights.safetensors")
    with open(lora / "pytorch_lora_weights.safetensors", "ab") as f:
        f.write(b"junk")
    with pytest.raises(ArtifactCorrupt, match="pytorch_lora_weights.safetensors.*header says"):
        load_lora_into(load_unet(trained[2]), lora)



def test_truncated_rorem_head_checkpoint_is_refused_naming_the_file(tiny_model, tmp_path):
    """RORem's released discriminator head is a torch zip (``cls_pred_branch.pt``): no header to check
    up front, so the zip directory / CRCs catch it while loading, and the error is ours, not torch's."""
    from rorem_core.reward.discriminator import (
        DiscriminatorInfo,
        RORem_HEAD_FILE,
        build_discriminator,
        load_discriminator,
        make_trainable,
        save_rorem_layout,
    )

    disc = build_discriminator(tiny_model, cache_dir=tmp_path / "cache",
                               info=DiscriminatorInfo(base=str(tiny_model), resolution=32, lora_rank=4))
    make_trainable(disc)                                           # adds the LoRA the layout stores
    save_rorem_layout(disc, tmp_path / "rorem")
    head = tmp_path / "rorem" / RORem_HEAD_FILE
    good = head.read_bytes()
    for damaged in (good[: len(good) // 2], good[:-30], b""):
        head.write_bytes(damaged)
        with pytest.raises(ArtifactCorrupt) as e:
            load_discriminator(tmp_path / "rorem", cache_dir=tmp_path / "cache", base=tiny_model, resolution=32)
        assert str(head) in str(e.value) and "dvc checkout" in str(e.value) and "truncated" in str(e.value)
    torch.save([1, 2], head)                                       # a valid torch file, but not a state dict
    with pytest.raises(ArtifactCorrupt, match="not a state dict"):
        load_discriminator(tmp_path / "rorem", cache_dir=tmp_path / "cache", base=tiny_model, resolution=32)
    head.write_bytes(good)
    assert load_discriminator(tmp_path / "rorem", cache_dir=tmp_path / "cache", base=tiny_model, resolution=32)

def test_truncated_latent_cache_entry_stops_training_naming_the_entry(trained, tiny_model, tiny_triplets):
    tmp, _, _ = trained
    entries = sorted((tmp / "cache" / "latents").glob("*/*/*.safetensors"))
    assert len(entries) == 10
    _truncate(entries[3])
    with pytest.raises(CacheCorrupt) as e:
        load_entry(entries[3])
    assert str(entries[3]) in str(e.value) and "delete" in str(e.value)
    cfg = _cfg(tmp, steps=3)                       # another run (new work dir) on the same cache
    with pytest.raises(CacheCorrupt, match=str(entries[3].name)):
        train_remover(cfg, tiny_model, [tiny_triplets], tmp / "never")
    assert not (tmp / "never").exists()
    entries[3].unlink()                            # the documented recovery: delete it, run again
    train_remover(cfg, tiny_model, [tiny_triplets], tmp / "recovered")
    assert load_entry(entries[3])["target"].shape == (4, 8, 8)


# ---- frozen Label Studio exports ------------------------------------------------------------------

def _pulled(rel, ann_round):
    cands, out = ann_round
    ids = [c["id"] for c in json.loads(cands.read_text())["candidates"]]
    votes = {cid: [rel.annotation(10 + i, i + 1, "a@x.org", rel.review_choice("good" if i % 2 == 0 else "bad"))]
             for i, cid in enumerate(ids)}
    client = rel.FakeLabelStudio({"review": rel.review_export(ids, votes)})
    cfg = AnnotationConfig(pairwise=False)
    res = pull_round(client, cfg, 1, cands, out)
    assert res.scored == 4 and res.new_snapshots == ["review_export.json"]
    return client, cfg, cands, out


def test_truncated_export_snapshot_is_refused_and_nothing_is_rewritten(rel, ann_round):
    client, cfg, cands, out = _pulled(rel, ann_round)
    snap = out / "review_export.json"
    good = snap.read_bytes()
    assert load_snapshot(out, "review") == json.loads(good)
    os.chmod(snap, 0o644)
    snap.write_bytes(good[: len(good) // 2])
    os.chmod(snap, 0o444)
    before = rel.tree_hash(out, cands.parent)
    for call in (lambda: pull_round(client, cfg, 1, cands, out), lambda: load_snapshot(out, "review"),
                 lambda: verify_snapshots(out)):
        with pytest.raises(SnapshotCorrupt) as e:
            call()
        assert str(snap) in str(e.value) and "dvc checkout" in str(e.value)
    assert rel.tree_hash(out, cands.parent) == before, "a refused pull must not write anything"

    # recovery: restore the file (what `dvc checkout` does); the next pull finds it intact and adds nothing
    os.chmod(snap, 0o644)
    snap.write_bytes(good)
    os.chmod(snap, 0o444)
    again = pull_round(client, cfg, 1, cands, out)
    assert again.new_snapshots == [] and again.snapshots == {"review": "review_export.json"}


def test_edited_snapshot_or_summary_fails_the_checksum(rel, ann_round):
    client, cfg, cands, out = _pulled(rel, ann_round)
    snap = out / "review_export.json"
    os.chmod(snap, 0o644)
    tasks = json.loads(snap.read_bytes())
    tasks[0]["annotations"][0]["result"] = rel.review_choice("bad")     # valid JSON, different labels
    snap.write_text(json.dumps(tasks, indent=1, sort_keys=True) + "\n")
    with pytest.raises(SnapshotCorrupt, match="fails its checksum"):
        pull_round(client, cfg, 1, cands, out)
    (out / "summary.json").write_text("{")
    with pytest.raises(SnapshotCorrupt, match="summary.json: unreadable"):
        load_snapshot(out, "review")


def test_temp_folder_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    """A stage killed inside ``atomic_dir`` leaves ``.<name>.<pid>-*.tmp``; the next write of that
    output removes it (its pid is dead), never a live writer's temp, and never uses either as output."""
    import os
    import subprocess
    import sys

    from rorem_core.io import atomic_dir

    out = tmp_path / "models" / "round-1"
    code = ("import os, sys; from rorem_core.io import atomic_dir\n"
            f"with atomic_dir({str(out)!r}) as t:\n"
            "    (t / 'half.bin').write_bytes(b'x'); os._exit(9)\n")   # dies inside the block, no cleanup
    subprocess.run([sys.executable, "-c", code], check=False)
    left = list(out.parent.glob(".round-1.*.tmp"))
    assert len(left) == 1 and not out.exists()
    live = out.parent / f".round-1.{os.getpid()}-keep.tmp"      # a live writer's temp (this process)
    live.mkdir()
    with atomic_dir(out) as t:
        (t / "done.txt").write_text("ok")
    assert (out / "done.txt").read_text() == "ok" and not left[0].exists() and live.exists()


def test_a_killed_writer_not_yet_reaped_counts_as_gone(tmp_path):
    """A SIGKILLed writer whose parent has not reaped it is a zombie: kill(pid, 0) still succeeds, but
    its temp output must be dropped all the same (and a DVC rwlock entry of it, tasks/dvc.py)."""
    import os
    import signal
    import subprocess
    import sys

    from rorem_core.io import drop_stale_temps, pid_alive

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(child.pid)
        left = tmp_path / f".round-1.{child.pid}-x.tmp"
        left.mkdir()
        os.kill(child.pid, signal.SIGKILL)
        while open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            pass                                                   # dead, not reaped: a zombie
        assert not pid_alive(child.pid)
        assert drop_stale_temps(tmp_path / "round-1") == [left] and not left.exists()
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid) and pid_alive(os.getpid())
