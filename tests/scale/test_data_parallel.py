"""Data-parallel inference (issue 17): a stage run by 2 processes through the project's launcher
(`launch.processes: 2`; on CPU it starts torchrun, gloo, one torch thread each; on GPUs accelerate launch)
writes byte-identical files to the same stage run by 1 process: blocks are the single process's UNet
batches and seeds are per candidate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rorem_core.parallel import Shards, flatten_in_order
from tests.helpers.launch import run_stage
from tests.helpers.served import free_port

RES = 32
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def test_blocks_go_round_robin_and_gather_back_in_order():
    two = [Shards(0, 2), Shards(1, 2)]
    assert [s.blocks(7, 2) for s in two] == [[(0, 2), (4, 6)], [(2, 4), (6, 7)]]
    assert Shards().blocks(7, 3) == [(0, 3), (3, 6), (6, 7)]
    parts = [[(0, ["a", "b"]), (4, ["e"])], [(2, ["c", "d"])]]          # as gathered: rank order
    assert flatten_in_order(parts) == ["a", "b", "c", "d", "e"]
    assert Shards().gather({"x": 1}) == [{"x": 1}]                    # one process: no process group


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def generate_project(tmp_path_factory, random_tiny_model):
    from rorem_core.data.synthetic import SyntheticConfig, write_pool

    root = tmp_path_factory.mktemp("dp")
    write_pool(root / "pool", root / "hidden", SyntheticConfig(size=RES, pool_size=5), 1)
    params = {"base": {"cache_dir": str(root / "cache"), "work_dir": str(root / "work"), "wandb_mode": "disabled",
                       "device": "cpu", "resolution": RES, "seed": 0},
              "generate": {"num_seeds": 2, "batch_size": 4, "steps": 2}}     # 2 inputs x 2 seeds per UNet batch: 3 blocks
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root, random_tiny_model(RES)


def _generate(root: Path, model: Path, out: str, procs: int) -> str:
    return run_stage(root / "params.yaml", "rorem_core.stages.generate", ["--round", "1", "--remover", str(model),
                     "--pool", str(root / "pool"), "--out", str(root / out)], procs)


@pytest.mark.multiprocess
def test_generate_with_two_processes_writes_the_same_bytes_as_one(generate_project):
    root, model = generate_project
    _generate(root, model, "one", 1)
    assert _generate(root, model, "two", 2).count('"manifest"') == 2     # both processes ran the stage
    one, two = _files(root / "one"), _files(root / "two")
    assert len(one) == 1 + 5 * 2 + 5 * 2        # manifest, source + mask per input, 2 results per input
    assert one.keys() == two.keys()
    differ = [k for k in one if one[k] != two[k]]
    assert not differ, f"differ between 1 and 2 processes: {differ}"
    assert not list(root.glob(".two.shards")), "the staging folder was swapped into place"


@pytest.mark.multiprocess
def test_auto_score_with_two_processes_writes_the_same_bytes_as_one(generate_project):
    """Scoring (the selection's and auto_score's Scorer) shards its batches: same scores, same files."""
    import torch

    from rorem_core.reward.discriminator import DiscriminatorInfo, build_discriminator, make_trainable, save_discriminator

    root, model = generate_project
    if not (root / "one" / "candidates.json").is_file():
        _generate(root, model, "one", 1)
    torch.manual_seed(0)
    disc = build_discriminator(model, cache_dir=root / "cache", info=DiscriminatorInfo(base=str(model), resolution=RES,
                                                                                       threshold=0.5, lora_rank=2))
    make_trainable(disc)
    with torch.no_grad():     # a random head, so the scores differ between candidates
        for p in disc.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_discriminator(disc, root / "disc", model)
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["auto_score"] = {"batch_size": 3, "threshold": 0.5}                  # 20 candidates: 7 batches, uneven
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    outs = {}
    for procs in (1, 2):
        out = root / f"auto-{procs}"
        run_stage(root / "params.yaml", "rorem_core.stages.auto_score", ["--discriminator", str(root / "disc"),
                  "--candidates", str(root / "one"), "--out", str(out), "--metrics", str(root / f"auto-{procs}.json")],
                  procs)
        outs[procs] = _files(out)
    import json

    scores = [c["score"] for c in json.loads(outs[1]["candidates.json"])["candidates"]]
    assert len(set(scores)) > 1
    assert outs[1] == outs[2]
    assert (root / "auto-1.json").read_bytes() == (root / "auto-2.json").read_bytes()


@pytest.mark.multiprocess
def test_evaluate_with_two_processes_writes_the_same_bytes_as_one(generate_project):
    """The test-split evaluation (remover, reference fills, AE ceiling, grid, gallery, saved fills)."""
    from rorem_core.data.synthetic import SyntheticConfig, write_triplets

    root, model = generate_project
    if not (root / "test" / "meta.json").is_file():
        write_triplets(root / "test", SyntheticConfig(size=RES), "test", 7, 0.5)
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["evaluate"] = {"batch_size": 2, "steps": 2, "num_grid": 3}      # 7 images: 4 batches, uneven
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    outs = {}
    for procs in (1, 2):
        run_stage(root / "params.yaml", "rorem_core.stages.evaluate", ["--remover", str(model), "--test",
                  str(root / "test"), "--out", str(root / f"eval-{procs}"), "--metrics", str(root / f"eval-{procs}.json")],
                  procs)
        outs[procs] = {**_files(root / f"eval-{procs}"), "metrics": (root / f"eval-{procs}.json").read_bytes()}
    assert "samples.png" in outs[1] and "gallery/index.json" in outs[1]
    assert outs[1] == outs[2]


CACHE_SCRIPT = """
import json, sys
from pathlib import Path
from rorem_core.config.base import BaseConfig
from rorem_core.data.formats import read_triplets
from rorem_core.data.latents import latent_cache, load_entry
from rorem_core.parallel import shards

model, test, cache_dir, report = (Path(a) for a in sys.argv[1:5])
base = BaseConfig(cache_dir=str(cache_dir), device="cpu", resolution=32)
cache = latent_cache(model, base)
cache.batch_size = 2
encoded = []
real = cache._encode_batch
cache._encode_batch = lambda batch: (encoded.extend(str(p) for _, p in batch), real(batch))
items = [(test / t.source, test / t.mask, test / t.GT) for t in read_triplets(test / "meta.json")]
paths = cache.ensure(items)
n = sum(1 for p in paths if load_entry(p))          # every entry readable by every process after ensure
sh = shards()
parts = sh.gather(encoded)
if sh.main:
    report.write_text(json.dumps({"per_process": [len(p) for p in parts], "all": sorted(x for p in parts for x in p),
                                  "readable": n, "paths": [str(p) for p in paths]}))
"""


@pytest.mark.multiprocess
def test_latent_cache_fill_splits_entries_between_processes_and_each_is_written_once(generate_project, tmp_path):
    import json

    import torch

    from rorem_core.data.latents import load_entry
    from rorem_core.data.synthetic import SyntheticConfig, write_triplets

    root, model = generate_project
    test = tmp_path / "set"
    write_triplets(test, SyntheticConfig(size=RES), "c", 9, 0.5)
    script = tmp_path / "fill.py"
    script.write_text(CACHE_SCRIPT)
    reports = {}
    for procs in (1, 2):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_addr",
                    "127.0.0.1", "--master_port", str(free_port())] if procs > 1 else [sys.executable]
        report = tmp_path / f"report-{procs}.json"
        r = subprocess.run([*launcher, str(script), str(model), str(test), str(tmp_path / f"cache-{procs}"), str(report)],
                           env={**ENV, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
        reports[procs] = json.loads(report.read_text())
    one, two = reports[1], reports[2]
    assert one["readable"] == two["readable"] == 9
    assert len(two["per_process"]) == 2 and min(two["per_process"]) > 0          # both processes encoded some
    assert len(two["all"]) == len(set(two["all"])) == 9                          # each entry written once
    for a, b in zip(one["paths"], two["paths"]):                                 # same content-addressed keys
        assert Path(a).name == Path(b).name
        ea, eb = load_entry(a), load_entry(b)
        for k in ea:      # other batch compositions: equal up to float reduction order
            torch.testing.assert_close(ea[k], eb[k], atol=1e-5, rtol=1e-5)
