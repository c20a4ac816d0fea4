"""Can anything learn, without the ground truth, to order the K candidates of one input? (docs/discriminator.md,
"Ordering an input's candidates")

  PYTHONPATH=. python benchmarks/bench_sibling_probe.py --workdir W     # W: bench_self_training's workdir

The round's discriminator orders an input's candidates at chance (within-input AUC 0.43-0.62) although
its 16x16 latent holds the difference (bench_latent_siblings.py). This separates the input representation
from the model. On the judge-labelled candidates of W (every candidate of the pool's inputs), it prints the
within-input AUC of:
- ``residual_rms``: one number, no training: minus the RMS, over the latent hole, of the residual channels
  of the discriminator's ``view: residual`` input (result latent minus the latent of the source whose hole
  is filled harmonically in pixels);
- a probe CNN (3 convolutions, global max pool; not a product model) trained on each view's 9-channel
  input (``rorem``: [result | mask | source]; ``residual``: [result - filled | mask | filled]) on the labels
  of 80 % of the inputs (a hash split by input), scored on its training inputs and on the other 20 %.
The views are exactly what the discriminator is fed (reward/discriminator.encoder_input).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def load_views(work: Path) -> tuple[dict, list[float], list[str]]:
    """{view: (N, 9, h, w)} of every judged candidate of ``work``, their labels and input ids."""
    import torch

    from benchmarks.bench_self_training import _cfg, _setup
    from rorem_core.data.latents import latent_cache, load_entry
    from rorem_core.reward.discriminator import RESIDUAL_FILL, encoder_input

    _setup(work)
    cfg = _cfg("train_discriminator")
    verdicts = json.loads((work / "verdicts.json").read_text())
    c = work / "cands"
    # a cache whose masked latent is the residual view's filled source (as train_discriminator's)
    cache = latent_cache(work / "models/base", cfg.base, cfg.frozen_dtype, RESIDUAL_FILL)
    entries = [load_entry(e) for e in cache.ensure([(c / v["source"], c / v["mask"], c / v["result"]) for v in verdicts])]
    r, m, s, f = (torch.stack([e[k] for e in entries]).float() for k in ("target", "mask", "source", "masked"))
    views = {view: encoder_input(view, r, m, s, f) for view in ("rorem", "residual")}
    return views, [float(v["good"]) for v in verdicts], [v["input_id"] for v in verdicts]


def residual_rms(x) -> np.ndarray:
    """Minus the RMS of the residual channels (0-3 of the residual view) over the hole (channel 4): higher = cleaner."""
    hole = x[:, 4:5] > 0.5
    sq = (x[:, :4] ** 2 * hole).sum((1, 2, 3)) / (4 * hole.sum((1, 2, 3))).clamp_min(1)
    return -sq.sqrt().numpy()


def probe(x, y, train, steps: int, seed: int = 0) -> np.ndarray:
    """Scores of every row from a small CNN trained with BCE on the rows where ``train`` (Adam 1e-3, batch 32)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(x.shape[1], 32, 3, padding=1), nn.SiLU(),
                        nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.SiLU(),
                        nn.Conv2d(64, 64, 3, padding=1, stride=2), nn.SiLU(),
                        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    xt, yt = x[train], torch.tensor(y)[train]
    for _ in range(steps):
        i = torch.randint(0, len(xt), (min(32, len(xt)),))
        loss = nn.functional.binary_cross_entropy_with_logits(net(xt[i])[:, 0], yt[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return net(x)[:, 0].numpy()


def is_train(key: str, heldout: float = 0.2) -> bool:
    return int(hashlib.sha256(f"probe:{key}".encode()).hexdigest()[:8], 16) / 16**8 >= heldout


def main(argv: list[str] | None = None) -> int:
    import torch

    from rorem_core.reward.metrics import within_group_auc

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True, help="bench_self_training's workdir (after prepare)")
    p.add_argument("--steps", type=int, default=1200, help="probe CNN training steps")
    a = p.parse_args(argv)
    if not (a.workdir / "verdicts.json").is_file():
        p.error(f"{a.workdir / 'verdicts.json'} does not exist: run bench_self_training.py --workdir {a.workdir} prepare")
    torch.set_num_threads(1)
    views, y, groups = load_views(a.workdir.resolve())
    train = np.array([is_train(g) for g in groups])

    def auc(scores, rows) -> str:
        w = within_group_auc(np.array(y)[rows], np.asarray(scores)[rows], np.array(groups)[rows])
        return "-" if w["auc"] is None else f"{w['auc']:.3f} ({w['n_groups']} inputs, {w['n_pairs']} pairs)"

    every = np.ones(len(y), bool)
    print(f"{len(y)} candidates of {len(set(groups))} inputs; probe trained on {train.sum()} candidates of "
          f"{len({g for g, t in zip(groups, train) if t})} inputs")
    print("| reading | within-input AUC, training inputs | within-input AUC, held-out inputs |")
    print("|---|---|---|")
    print(f"| residual_rms (no training, all inputs) | {auc(residual_rms(views['residual']), every)} | - |")
    for view, x in views.items():
        s = probe(x, y, torch.from_numpy(train), a.steps)
        print(f"| probe CNN, view {view} | {auc(s, train)} | {auc(s, ~train)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
