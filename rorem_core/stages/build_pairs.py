"""Stage 9, build_pairs: preference pairs from human pairwise choices, human good/bad labels on the
same input, and discriminator-score gaps >= margin; ties dropped, duplicates removed, the rule that
made each pair kept; counts per rule in the metrics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

from pydantic import BaseModel

from rorem_core.config import BuildPairsConfig
from rorem_core.data.formats import dataset_file
from rorem_core.preference.pairs import (
    RULES,
    dedupe,
    good_bad_pairs,
    human_pairs,
    margin_pairs,
    pair_counts,
    read_scored,
    write_pairs,
)
from rorem_core.stages import _cli


class BuildPairsResult(BaseModel):
    pairs: str                   # path of the written pairs.json
    n_pairs: int
    per_rule: dict[str, int]     # kept pairs per rule
    dropped: dict[str, int]      # ties per rule, duplicates, conflicts, unscored results


def _pairs_file(p: Path) -> Path:
    """A pairs file, or a folder holding one: ``meta.json`` (the annotation pull) or ``pairs.json`` (ours)."""
    return dataset_file(p, "meta.json", "pairs.json")


def run(cfg: BuildPairsConfig, out_dir: Path, *, human: Sequence[Path] = (), labels: Sequence[Path] = (),
        scored: Sequence[Path] = ()) -> BuildPairsResult:
    """Pairs from ``human`` pairs files (rule a), ``labels`` = human-scored results (rule b) and
    ``scored`` = discriminator-scored results (rule c); each a candidates manifest or a scored
    meta.json (see ``pairs.read_scored``)."""
    if not (human or labels or scored):
        raise ValueError("build_pairs: no inputs; pass human pairs, human labels and/or scored candidates")
    dropped: Counter = Counter()
    prefs = []
    for path in human:
        got, ties = human_pairs(_pairs_file(Path(path)))
        prefs += got
        dropped["ties_human_pair"] += ties
    label_samples = [s for p in labels for s in read_scored(Path(p))]
    got, stats = good_bad_pairs(label_samples, good_min=cfg.good_min, bad_max=cfg.bad_max,
                                max_per_input=cfg.max_pairs_per_input)
    prefs += got
    dropped["unscored"] += stats["unscored"]
    score_samples = [s for p in scored for s in read_scored(Path(p))]
    got, stats = margin_pairs(score_samples, margin=cfg.margin, max_per_input=cfg.max_pairs_per_input)
    prefs += got
    dropped["ties_score_margin"] += stats["ties"]
    dropped["unscored"] += stats["unscored"]
    kept, dstats = dedupe(prefs)
    dropped.update(dstats)
    pairs = write_pairs(out_dir, kept)
    keys = [f"ties_{r}" for r in RULES] + ["duplicates", "conflicts", "unscored"]
    return BuildPairsResult(pairs=str(out_dir / "pairs.json"), n_pairs=len(pairs), per_rule=pair_counts(pairs),
                            dropped={k: int(dropped.get(k, 0)) for k in keys})


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("build_pairs", __doc__)
    p.add_argument("--human", type=Path, nargs="*", default=[], help="human pairs files (rule a)")
    p.add_argument("--labels", type=Path, nargs="*", default=[],
                   help="human good/bad scored meta.json or candidates.json (rule b)")
    p.add_argument("--scored", type=Path, nargs="*", default=[],
                   help="discriminator-scored candidates.json or meta.json (rule c)")
    p.add_argument("--out", type=Path, required=True, help="output folder (pairs.json + images/)")
    p.add_argument("--metrics", type=Path)
    args = p.parse_args(argv)

    def body(cfg):
        res = run(cfg, args.out, human=args.human, labels=args.labels, scored=args.scored)
        _cli.write_metrics(args.metrics, {"n_pairs": res.n_pairs, "per_rule": res.per_rule, "dropped": res.dropped})
        return res

    return _cli.run_main("build_pairs", args, body)


if __name__ == "__main__":
    raise SystemExit(main())
