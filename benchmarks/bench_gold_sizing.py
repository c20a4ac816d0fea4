"""How many gold answers rank annotators correctly: the three simulated annotators of the acceptance
test (error rates 0.02, 0.1, 0.3; expected gold accuracy 0.98 / 0.9 / 0.7) over many simulation seeds.

    .venv/bin/python benchmarks/bench_gold_sizing.py [--seeds 200] [--min-accuracy 0.8]

For each gold count it prints the share of seeds in which gold accuracy ranks the annotators in
order of their error rate AND only the worst falls below ``--min-accuracy``. It evaluates the
simulated annotators' own decision function (:func:`annotation.simulated._uniforms`) on the gold keys
that :func:`annotation.gold.plan_gold` draws, so no Label Studio is needed; figures in docs/annotation.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from annotation.config import GoldConfig  # noqa: E402
from annotation.gold import plan_gold  # noqa: E402
from annotation.simulated import _uniforms  # noqa: E402
from rorem_core.data.formats import read_candidates  # noqa: E402
from tests.helpers.rounds import make_round  # noqa: E402

RATES = (0.02, 0.1, 0.3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--min-accuracy", type=float, default=0.8)
    args = ap.parse_args()
    print(f"{'gold answers':>12} | {'order + flag right':>18} | seed 0 accuracies")
    for n_inputs in (6, 11, 21, 31, 41):
        with tempfile.TemporaryDirectory() as d:
            r = make_round(Path(d) / "data", 30, n_inputs=n_inputs)
            plan = plan_gold(GoldConfig(share=0.5), 30, read_candidates(r.candidates), r.candidates.parent,
                             hidden_meta=r.hidden)
        ok, first = 0, None
        for seed in range(args.seeds):
            acc = [1 - sum(_uniforms(seed, k, f"review:{g.key}")[1] < rate for g in plan.items) / len(plan.items)
                   for k, rate in enumerate(RATES)]
            ok += acc[0] > acc[1] > acc[2] and acc[1] >= args.min_accuracy > acc[2]
            first = first or acc
        print(f"{len(plan.items):>12} | {ok / args.seeds:>17.0%} | {', '.join(f'{a:.3f}' for a in first)}")


if __name__ == "__main__":
    main()
