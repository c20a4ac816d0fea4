"""Online-RL learning runs on the tiny preset (shipped base, 64 px, CPU), printed side by side:

    python benchmarks/bench_rl_learning.py [--workspace DIR] [--out DIR] [--rewards brightness,discriminator,oracle,judge]
        [--set KEY=VALUE ...]      # train_rl fields over RECIPE, e.g. --set lr=3e-4

One recipe for every reward (RECIPE: REINFORCE, lr 1e-3, 160 transitions per step, 20 steps = 10
rollouts of 16 inputs x 4 samples; 20 held-out inputs of a 40-input pool; 100 test images):
  brightness     mean pixel value inside the mask: a reward the remover controls directly
  discriminator  a discriminator trained here on simulated oracle labels of pool 2 (rollouts on pool 1)
  oracle         masked PSNR vs the hidden GT (synthetic data only)
  judge          the judge's graded score vs the hidden GT (synthetic data only; docs/judge.md)
For each: the held-out reward, test oracle success (PSNR rule), test success as the judge sees it and
test masked PSNR before -> after with the
paired 95 % interval. tests/rl/test_learning.py asserts on the brightness run; docs/rl.md has the table.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import yaml

from rorem_core.config import stage_config

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:   # run as a script: the repo root for `benchmarks.common`
    sys.path.insert(0, str(REPO))
RECIPE = dict(loss="reinforce", lr=1e-3, batch_size=160, steps=20, patience=0, heldout_fraction=0.5,
              test_images=100, log_every=2, checkpoint_every=50)


class Brightness:
    """Mean pixel value inside the mask: a reward the remover can raise without removing better."""

    name, success_threshold = "brightness", 0.0

    def __call__(self, results, sources, masks, ids):
        m = masks.float()
        return ((results.mean(1, keepdim=True) * m).sum((1, 2, 3)) / m.sum((1, 2, 3))).float()



def _common():
    """benchmarks.common, imported once the repo root is on sys.path (these files also run as scripts)."""
    from benchmarks import common

    return common

def workspace(path: Path | None, out: Path) -> tuple[dict, Path, Path]:
    """(params with scratch dirs under ``out``, base model dir, data dir); bootstraps one if needed."""
    if path is None:
        path = out / "ws"
        _common().tiny_workspace(path, n_seed=400, pool_size=40, n_pools=2)
    params = copy.deepcopy(yaml.safe_load((path / "params.yaml").read_text()))
    params["base"].update(cache_dir=str(out / "cache"), work_dir=str(out / "work"), wandb_mode="disabled", device="cpu")
    return params, path / "models" / "base", path / "data"


def run_reward(reward: str, params: dict, model: Path, data: Path, out: Path, **over):
    """One train_rl run with ``reward`` under RECIPE (+ ``over``); returns the stage's TrainRLResult."""
    from rorem_core.rl import rewards
    from rorem_core.stages import train_discriminator, train_rl

    kw = {}
    if reward == "brightness":
        rewards.register("brightness", lambda **_: Brightness())
    elif reward == "discriminator":
        from tests.helpers.oracle_labels import simulate_labels

        labels = simulate_labels(model, [("pool-2", data / "pools/round-2", data / "hidden/round-2")], out,
                                 stage_config("generate", params, {"steps": 25}), noise_db=0.5, seed=0)
        if not (out / "disc" / "discriminator.json").is_file():
            dcfg = stage_config("train_discriminator", params, {"steps": 300, "anchors": 0})
            train_discriminator.run(dcfg, model, labels, out / "disc")
        kw["discriminator"] = out / "disc"
    else:   # oracle, judge: the pool's hidden GT
        kw["hidden"] = data / "hidden/round-1"
    cfg = stage_config("train_rl", params, {**RECIPE, "reward": reward, **over})
    try:
        return train_rl.run(cfg, model, data / "pools/round-1", out / f"rl-{reward}", test=data / "test", **kw)
    finally:
        rewards.REWARDS.pop("brightness", None)


def show(reward: str, res) -> None:
    for k in ("heldout_reward", "test_success", "test_judged_success", "test_masked_psnr"):
        d = getattr(res, k)
        print(f"{reward:<14} {k:<17} n={d['n']:3d} before {d['before']:.4f} after {d['after']:.4f} "
              f"delta {d['delta']:+.4f} 95% CI [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, help="a bootstrapped project (params.yaml + models/base + data)")
    ap.add_argument("--out", type=Path, default=Path(".rorem/bench_rl_learning"))
    ap.add_argument("--rewards", default="brightness,discriminator,oracle")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a train_rl field over RECIPE, e.g. --set lr=3e-4 --set steps=40 (repeatable)")
    a = ap.parse_args()
    from benchmarks.bench_rounds import parse_sets

    over = parse_sets(a.sets)
    params, model, data = workspace(a.workspace, a.out)
    for reward in a.rewards.split(","):
        show(reward, run_reward(reward, params, model, data, a.out / reward, **over))


if __name__ == "__main__":
    main()
