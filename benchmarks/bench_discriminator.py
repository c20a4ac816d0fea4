"""Discriminator benchmark (tiny preset, CPU, fixed seeds), two parts printed side by side:

1. Learning: candidates of the tiny remover on pools 1-2 and the test inputs, plus known-good (the
   ground truth) and known-bad (object left, blotchy noise fill) results, labelled by the simulated
   oracle (noisy near its 20 dB threshold); train_discriminator with the params.yaml preset; held-out
   accuracy, ROC-AUC, ECE and estimated vs human success rate, overall, per difficulty band and per kind.
2. Scoring throughput on the same candidates and model: batched (auto_score's path) vs one image at a
   time (RORem's inference script: one VAE encode + one discriminator call per image), images/s and ratio.

    python benchmarks/bench_discriminator.py [--workspace DIR] [--noise-db 0.5] [--n-throughput 256]

The workspace (bootstrap: shipped tiny base + synthetic data) is created on first use and reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from rorem_core.config import stage_config
from rorem_core.data.formats import read_candidates, resolve_in_root

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:   # run as a script: the repo root for `tests.helpers`
    sys.path.insert(0, str(REPO))
# used when params.yaml has no train_discriminator section yet (the recommended tiny preset)
TINY_TRAIN = dict(mode="full", steps=600, batch_size=32, lr=3e-4, lr_schedule="constant_with_warmup",
                  lr_warmup_steps=20, checkpoint_every=200, log_every=50, heldout_fraction=0.2)



def _common():
    """benchmarks.common, imported once the repo root is on sys.path (these files also run as scripts)."""
    from benchmarks import common

    return common

def workspace(root: Path) -> dict:
    """params of a tiny workspace under ``root`` (bootstrapped once)."""
    return _common().tiny_workspace(root, n_seed=400, pool_size=40, n_pools=2)


def learning(root: Path, params: dict, noise_db: float) -> tuple[dict, list[Path]]:
    from rorem_core.stages import train_discriminator
    from tests.helpers.oracle_labels import simulate_labels

    data, model = root / "data", root / "models/base"
    sources = [("pool-1", data / "pools/round-1", data / "hidden/round-1"),
               ("pool-2", data / "pools/round-2", data / "hidden/round-2"), ("test", data / "test", data / "test")]
    gen = stage_config("generate", params, {"steps": 25})
    t0 = time.time()
    labels = simulate_labels(model, sources, root / "bench_disc", gen, noise_db=noise_db, seed=0)
    t1 = time.time()
    cfg = stage_config("train_discriminator", params, {} if params.get("train_discriminator") else TINY_TRAIN)
    res = train_discriminator.run(cfg, model, labels, root / "bench_disc/discriminator")
    print(f"data: generation + oracle labels {t1 - t0:.0f} s, training {time.time() - t1:.0f} s")
    return res.metrics, [root / "bench_disc/candidates" / s[0] / "candidates.json" for s in sources]


def print_learning(m: dict) -> None:
    print(f"\nheld-out agreement ({m['n_heldout_inputs']} inputs, {m['n_heldout_samples']} samples; "
          f"trained on {m['n_train_samples']}, {m['steps']} steps)")
    print(f"{'group':<17}{'n':>5}{'acc':>7}{'AUC':>7}{'ECE':>7}{'human':>8}{'est':>7}{'|dev|':>7}")
    for k, v in m["heldout"].items():
        auc = f"{v['roc_auc']:.3f}" if v["roc_auc"] is not None else "  n/a"
        print(f"{k:<17}{v['n']:>5}{v['accuracy']:>7.3f}{auc:>7}{v['ece']:>7.3f}{v['human_success_rate']:>8.3f}"
              f"{v['est_success_rate']:>7.3f}{v['success_rate_deviation']:>7.3f}")


def throughput(root: Path, params: dict, manifests: list[Path], n: int, batch: int) -> dict:
    """images/s of the batched scorer vs one image at a time, same model, same files."""
    from rorem_core.reward.selection import Scorer

    triples = []
    for man in manifests:
        for c in read_candidates(man):
            triples.append(tuple(resolve_in_root(man.parent, r) for r in (c.source, c.mask, c.result)))
    triples = triples[:n]
    base = stage_config("auto_score", params).base
    out = {}
    for name, bs in (("batched", batch), ("one_at_a_time", 1)):
        scorer = Scorer.load(root / "bench_disc/discriminator", base, batch_size=bs)
        scorer.score_files(triples[:bs])                                   # warm-up
        t = time.perf_counter()
        scores = scorer.score_files(triples)
        out[name] = {"images_per_s": len(triples) / (time.perf_counter() - t), "batch_size": bs}
        out[name]["scores"] = scores
    out["max_abs_score_diff"] = float(abs(out["batched"].pop("scores") - out["one_at_a_time"].pop("scores")).max())
    out["ratio"] = out["batched"]["images_per_s"] / out["one_at_a_time"]["images_per_s"]
    out["n_images"], out["torch_threads"] = len(triples), torch.get_num_threads()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workspace", type=Path, default=REPO / ".rorem/bench/discriminator")
    p.add_argument("--noise-db", type=float, default=0.5, help="simulated label noise scale near 20 dB")
    p.add_argument("--n-throughput", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscribing shared cores)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    params = workspace(args.workspace)
    metrics, manifests = learning(args.workspace, params, args.noise_db)
    print_learning(metrics)
    tp = throughput(args.workspace, params, manifests, args.n_throughput, args.batch)
    print(f"\nscoring throughput ({tp['n_images']} images, {tp['torch_threads']} torch thread(s), CPU):")
    for k in ("batched", "one_at_a_time"):
        print(f"  {k:<14} batch {tp[k]['batch_size']:>3}: {tp[k]['images_per_s']:8.1f} images/s")
    print(f"  ratio batched / one-at-a-time: {tp['ratio']:.1f}x   (max |score diff| {tp['max_abs_score_diff']:.2e})")
    summary = {"learning": metrics, "throughput": tp}
    (args.workspace / "bench_disc/summary.json").write_text(json.dumps(summary, indent=2, default=float))


if __name__ == "__main__":
    main()
