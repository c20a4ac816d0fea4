"""Does the remover's latent hold what tells a clean candidate from a failed sibling? (docs/judge.md, "Why
no threshold is 90 % precise")

  PYTHONPATH=. python benchmarks/bench_latent_siblings.py --workdir W     # W: bench_self_training's workdir

The round's discriminator reads candidates as latents and cannot order the K candidates of one input
(within-input AUC at chance). Either the latent does not hold the difference, or the discriminator does
not learn it. This measures the first: every candidate of the inputs whose candidates the judge splits
(some clean, some not) goes through the base's autoencoder and back, composited into its source as the
autoencoder ceiling is, and is judged again against the GT. If the judge still orders the siblings after
the round trip, the latent holds what separates them. Prints the within-input AUC of the judge's graded
score before and after, and how many clean / failed candidates the round trip leaves clean.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def round_trip_scores(work: Path) -> dict[str, list]:
    """{label, before, after, group}: per candidate of a mixed input, its verdict, the judge's graded score
    of the result and of the result after the autoencoder round trip (composited)."""
    import torch

    from rorem_core.data.images import load_mask, load_rgb
    from rorem_core.data.latents import image_to_tensor, mask_to_tensor
    from rorem_core.evaluation.judge import judge
    from rorem_core.models.loading import load_vae
    from rorem_core.models.remover import ae_ceiling

    by_input = collections.defaultdict(list)
    for v in json.loads((work / "verdicts.json").read_text()):
        by_input[v["input_id"]].append(v)
    gts = {h["id"]: work / "hidden" / h["GT"] for h in json.loads((work / "hidden/meta.json").read_text())}
    from benchmarks.bench_self_training import PARAMS  # the workdir's params (its resolution)

    vae, res = load_vae(work / "models/base"), PARAMS["base"]["resolution"]
    out: dict[str, list] = {"label": [], "before": [], "after": [], "group": []}
    for inp, cands in by_input.items():
        if all(c["good"] for c in cands) or not any(c["good"] for c in cands):
            continue                          # only inputs with both clean and failed candidates
        for c in cands:
            src, mask = load_rgb(work / "cands" / c["source"]), load_mask(work / "cands" / c["mask"])
            result, gt = load_rgb(work / "cands" / c["result"]), load_rgb(gts[inp])
            with torch.no_grad():
                back = ae_ceiling(vae, image_to_tensor(result, res)[None], image_to_tensor(src, res)[None],
                                  mask_to_tensor(mask, res)[None])
            back_img = ((back[0].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1).astype(np.float32)
            out["label"].append(float(c["good"]))
            out["before"].append(c["score"])
            out["after"].append(judge(src, mask, back_img, gt).score)
            out["group"].append(inp)
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from rorem_core.reward.metrics import within_group_auc

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True, help="bench_self_training's workdir (after prepare)")
    a = p.parse_args(argv)
    if not (a.workdir / "verdicts.json").is_file():
        p.error(f"{a.workdir / 'verdicts.json'} does not exist: run bench_self_training.py --workdir {a.workdir} prepare")
    torch.set_num_threads(1)
    r = round_trip_scores(a.workdir)
    y = np.array(r["label"]) > 0.5
    after = np.array(r["after"])
    print(f"{len(y)} candidates of {len(set(r['group']))} inputs with both clean and failed candidates")
    if not len(y):
        print("nothing to compare: no input has both clean and failed candidates")
        return 0
    for name in ("before", "after"):
        w = within_group_auc(r["label"], r[name], r["group"])
        print(f"judge score {name} the autoencoder round trip: within-input AUC {w['auc']:.3f} ({w['n_pairs']} pairs)")
    print(f"after the round trip judged clean: {100 * np.mean(after[y] > 0):.1f} % of the clean candidates, "
          f"{100 * np.mean(after[~y] > 0):.1f} % of the failed ones")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
