"""Which round mechanism can raise the remover's judged success? Measured on a VALIDATION split
(issue 13 part 5: chosen on evidence, never on the test split, never on a pool).

  PYTHONPATH=. python benchmarks/bench_self_training.py --workdir DIR prepare
  PYTHONPATH=. python benchmarks/bench_self_training.py --workdir DIR train RECIPE     # one per process
  PYTHONPATH=. python benchmarks/bench_self_training.py --workdir DIR table
  ... evaluate --init MODEL --name NAME          # any remover (e.g. a round's) on the validation split
  ... train RECIPE --init MODEL --name NAME      # a recipe's fine-tune from that remover

The remover half of a round, isolated, with a perfect annotator (the judge on the hidden GT) so that
only the mechanism varies: the base (the shipped harmonic-fill K = 5 base) generates K = 8
candidates per input on a pool of its own (``pool-101``: never a round's pool), the judge accepts the clean ones,
a recipe picks which enter the training set next to the seed triplets (accepted results are their
own targets, as in RORem) and fine-tunes the base; the base and every recipe are judged on the same
validation split (``val``: its own salt, 400 images, half hard) with the same seeds, so each change is
paired per image. Its splits are drawn by the project's synthetic generator under their own salts
(``val``, ``pool-101``, ``hardmix``): the test split and the round pools are never read.

Recipes (RECIPES below): the previous default (K = 2, a quarter of the inputs judged, 200 steps at
lr 2e-5), the same fine-tune on the seed alone (what the steps give without new data), best-of-K
(the cleanest accepted candidate per input, oversampled to half the batches, more steps), every clean
candidate, and two bounds that no selection can beat: the pool's hidden GT as targets, and 4,000 fresh
GT triplets half hard. ``disc SHARE`` trains the round's discriminator on the judge's labels of that
share of the pool's inputs and auto-scores the rest with both threshold rules (0.5, and
``auto_score.min_precision: 0.9``); ``--set KEY=VALUE`` overrides train_discriminator (``--name`` tags the
model, e.g. ``disc 1.0 --set inputs_per_batch=4 --set rank_weight=1 --name rank``). A finished step is
not run again (each writes atomically).
``--tiny`` (at prepare) shrinks every size: the wiring check of tests/core/test_self_training_bench.py.
Figures and commands: docs/judge.md, "The mechanism, on a validation split".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# params.yaml with the harmonic-fill base's recipe (rorem_core/assets/tiny_base_tex5_harmonic)
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
PARAMS["base"]["wandb_mode"] = "disabled"
PARAMS["bootstrap"].update(masked_fill="harmonic", base_unet="shipped")
PARAMS["bootstrap"]["pretrain"]["steps"] = 9600
PARAMS["bootstrap"]["synthetic"]["texture_scale"] = 5.0
POOL_ROUND = 101          # pool-101's salt: no round of a project reaches it
VAL_HARD = 0.5
# the measurement, and --tiny: a wiring check in a minute (CI), not a measurement
SIZES = {"full": dict(val=400, pool=240, k=8, gen_steps=50, eval_steps=50, step_scale=1.0, fresh=4000),
         "tiny": dict(val=16, pool=6, k=2, gen_steps=2, eval_steps=2, step_scale=0.01, fresh=16)}
TINY_SYNTHETIC = {"n_seed": 48, "n_test": 8, "pool_size": 4, "n_pools": 1}
# name -> k: candidates per input used; judged: share of the pool's inputs judged; pick: which clean
# candidates enter (all | best per input | none), or "gt" / "fresh_gt" (bounds, not mechanisms: the
# pool's hidden GT, or `fresh` new GT triplets half hard, trained on alone: seed=False); new_share:
# share of batches of new triplets (None: listed once); steps, lr (and schedule, warmup) of the fine-tune
RECIPES = {
    "previous": dict(k=2, judged=0.25, pick="all", new_share=None, steps=200, lr=2e-5),
    "seed_only": dict(k=0, judged=0.0, pick="none", new_share=None, steps=600, lr=1e-4),
    "best_of_k": dict(k=8, judged=1.0, pick="best", new_share=0.5, steps=600, lr=1e-4),
    "all_clean": dict(k=8, judged=1.0, pick="all", new_share=0.5, steps=600, lr=1e-4),
    "pool_gt": dict(k=1, judged=1.0, pick="gt", new_share=0.5, steps=600, lr=1e-4),
    "pool_gt_lr2e-5": dict(k=1, judged=1.0, pick="gt", new_share=0.5, steps=600, lr=2e-5),
    "fresh_gt": dict(k=0, judged=0.0, pick="fresh_gt", new_share=None, steps=2400, lr=1e-4, schedule="cosine",
                     warmup=50, seed=False),
}


def sizes(work: Path) -> dict:
    return json.loads((work / "sizes.json").read_text())


def _cfg(stage: str, **over):
    from rorem_core.config import stage_config

    return stage_config(stage, PARAMS, over)


def _setup(work: Path) -> dict:
    """The workdir's sizes (fixed by ``prepare``) and PARAMS pointed at the workdir."""
    sz = sizes(work)
    PARAMS["base"].update(cache_dir=str(work / "cache"), work_dir=str(work / "work"))
    if sz["val"] == SIZES["tiny"]["val"]:
        PARAMS["bootstrap"]["synthetic"].update(TINY_SYNTHETIC)
    return sz


def prepare(work: Path, size: str) -> None:
    """Base + seed, validation split, pool-101 with hidden GT, K candidates judged, base evaluated."""
    from rorem_core.data.synthetic import write_pool, write_triplets
    from rorem_core.io import write_json_atomic
    from rorem_core.stages import bootstrap, generate

    if not (work / "sizes.json").is_file():
        write_json_atomic(work / "sizes.json", SIZES[size])
    sz = _setup(work)
    if not (work / "models/base").is_dir():
        bootstrap.run(_cfg("bootstrap"), work / "models/base", work / "data")
    syn = _cfg("bootstrap").synthetic.model_copy(update={"pool_size": sz["pool"]})
    if not (work / "val/meta.json").is_file():
        write_triplets(work / "val", syn, "val", sz["val"], VAL_HARD)
    if not (work / "pool/meta.json").is_file():
        write_pool(work / "pool", work / "hidden", syn, POOL_ROUND)
    if not (work / "cands/candidates.json").is_file():
        generate.run(_cfg("generate", num_seeds=sz["k"], steps=sz["gen_steps"]), work / "models/base", work / "pool",
                     work / "cands", POOL_ROUND)
    if not (work / "verdicts.json").is_file():
        _judge_candidates(work)
    _evaluate(work, "base", work / "models/base", sz)


def _judge_candidates(work: Path) -> None:
    from rorem_core.data.formats import read_candidates
    from rorem_core.data.images import load_rgb
    from rorem_core.data.latents import load_mask
    from rorem_core.evaluation.judge import judge
    from rorem_core.io import write_json_atomic

    hidden = {h["id"]: h for h in json.loads((work / "hidden/meta.json").read_text())}
    out = []
    for c in read_candidates(work / "cands/candidates.json"):
        h = hidden[c.input_id]
        v = judge(load_rgb(work / "cands" / c.source), load_mask(work / "cands" / c.mask) > 0.5,
                  load_rgb(work / "cands" / c.result), load_rgb(work / "hidden" / h["GT"]))
        out.append({"id": c.id, "input_id": c.input_id, "band": h["band"], "good": v.good, "score": v.score,
                    "reason": v.reason, "source": c.source, "mask": c.mask, "result": c.result})
    write_json_atomic(work / "verdicts.json", out)


def _evaluate(work: Path, name: str, model: Path, sz: dict) -> None:
    from rorem_core.stages import evaluate

    if not (work / "eval" / name / "per_image.json").is_file():
        evaluate.run(_cfg("evaluate", judge="judge", references=False, steps=sz["eval_steps"]), model, work / "val",
                     work / "eval" / name)


def accepted(verdicts: list[dict], k: int, judged: float, pick: str) -> list[dict]:
    """The clean candidates a recipe trains on: candidates k0..k{k-1} of the first ``judged`` share of
    inputs (in pool order: random, the pool is shuffled by construction), all clean ones or the best."""
    by_input: dict[str, list[dict]] = {}
    for v in verdicts:
        if int(v["id"].rsplit("-k", 1)[1]) < k:
            by_input.setdefault(v["input_id"], []).append(v)
    inputs = list(by_input)[: math.ceil(judged * len(by_input))]
    out = []
    for i in inputs:
        clean = [v for v in by_input[i] if v["good"]]
        if pick == "gt":      # the hidden GT in place of the result, whatever the judge said
            out += [{**by_input[i][0], "result": f"gt/{i}.png"}]
        else:
            out += clean if pick == "all" else sorted(clean, key=lambda v: -v["score"])[:1] if pick == "best" else []
    return out


def repeats(n_new: int, n_seed: int, new_share: float | None) -> int:
    """How often the new triplets are listed so they make ~``new_share`` of the batches (1: as they come)."""
    if not n_new or new_share is None:
        return 1
    return max(1, round(new_share / (1 - new_share) * n_seed / n_new))


def _new_triplets(work: Path, name: str, r: dict, sz: dict) -> tuple[Path | None, int, int]:
    """(meta.json of the recipe's new triplets or None, how many, how many hard)."""
    from rorem_core.data.formats import Triplet, write_entries
    from rorem_core.data.synthetic import write_triplets

    if r["pick"] == "fresh_gt":
        d = work / "fresh_gt"
        if not (d / "meta.json").is_file():
            write_triplets(d, _cfg("bootstrap").synthetic, "hardmix", sz["fresh"], 0.5)
        bands = [e["band"] for e in json.loads((d / "meta.json").read_text())]
        return d / "meta.json", len(bands), bands.count("hard")
    new = accepted(json.loads((work / "verdicts.json").read_text()), r["k"], r["judged"], r["pick"])
    for v in new:   # pool_gt: the hidden GT beside the candidates (a dataset's paths stay inside its folder)
        gt = work / "cands" / v["result"]
        if v["result"].startswith("gt/") and not gt.is_file():
            gt.parent.mkdir(exist_ok=True)
            gt.hardlink_to(work / "hidden/GT" / gt.name)
    meta = work / "cands" / f"accepted_{name}.json"
    write_entries(meta, [Triplet(source=v["source"], mask=v["mask"], GT=v["result"], id=v["id"]) for v in new])
    return (meta if new else None), len(new), sum(v["band"] == "hard" for v in new)


def train(work: Path, name: str, init: Path | None = None, as_name: str | None = None) -> None:
    """Fine-tune the base (or ``init``, e.g. a round's remover, stored as ``as_name``) with one recipe on
    seed + its new triplets; judge it on the validation split."""
    from rorem_core.stages import train_remover

    sz, r = _setup(work), RECIPES[name]
    meta, n_new, n_hard = _new_triplets(work, name, r, sz)
    n_seed = len(json.loads((work / "data/seed/meta.json").read_text()))
    rep = repeats(n_new, n_seed, r["new_share"])
    name = as_name or name
    out = work / "models" / name
    if not (out / "rorem_model.json").is_file():
        steps = max(2, round(r["steps"] * sz["step_scale"]))
        cfg = _cfg("train_remover", steps=steps, lr=r["lr"], checkpoint_every=100, log_every=50,
                   lr_warmup_steps=min(r.get("warmup", 20), steps - 1),
                   **({"lr_schedule": r["schedule"]} if "schedule" in r else {}))
        seed = [work / "data/seed"] if r.get("seed", True) else []
        train_remover.run(cfg, init or work / "models/base", [*seed, *([meta] * rep if meta else [])], out)
    (work / "eval").mkdir(exist_ok=True)
    what = f"{n_new} ({n_hard}) x {rep}" + (f" from {init}" if init else "")
    (work / "eval" / f"{name}.json").write_text(json.dumps({"what": what}))
    _evaluate(work, name, out, sz)


def evaluate_model(work: Path, name: str, model: Path) -> None:
    """Judge any remover folder (e.g. a round's, from bench_rounds) on the validation split as ``name``."""
    sz = _setup(work)
    (work / "eval").mkdir(exist_ok=True)
    (work / "eval" / f"{name}.json").write_text(json.dumps({"what": f"model {model}"}))
    _evaluate(work, name, model, sz)


def disc(work: Path, judged: float, over: dict | None = None, tag: str | None = None) -> dict:
    """The round's discriminator trained on the judge's labels of ``judged`` of the pool's inputs (all K
    candidates each, as `select.unit: input`), with train_discriminator's own held-out split by input;
    ``over``: train_discriminator overrides (e.g. rank_weight), its model named ``disc_{judged}_{tag}``."""
    from rorem_core.data.formats import Triplet, write_entries
    from rorem_core.stages import train_discriminator

    _setup(work)
    verdicts = json.loads((work / "verdicts.json").read_text())
    every = list(dict.fromkeys(v["input_id"] for v in verdicts))
    inputs = every[: math.ceil(judged * len(every))]
    keep = set(inputs)
    meta = work / "cands" / f"labels_{judged:g}.json"
    write_entries(meta, [Triplet(source=v["source"], mask=v["mask"], GT=v["result"], id=v["id"], input_id=v["input_id"],
                                 score=float(v["good"])) for v in verdicts if v["input_id"] in keep])
    name = f"disc_{judged:g}" + (f"_{tag}" if tag else "")
    d = work / "models" / name
    res = train_discriminator.run(_cfg("train_discriminator", **(over or {})), work / "models/base", [meta], d,
                                  anchors=work / "data/seed")
    h = res.metrics["heldout"]["all"]
    out = {"judged": judged, "inputs": len(inputs), "over": over or {},
           **{k: h[k] for k in ("n", "n_good", "roc_auc", "roc_auc_ci95")},
           "within_input": res.metrics["heldout_within_input"]}
    rest = [v for v in verdicts if v["input_id"] not in keep]
    if rest:     # the unjudged inputs' candidates, auto-scored as a round does, by both threshold rules
        out["auto"] = {rule: _auto_precision(work, d, rest, f"{name[5:]}_{rule}", auto_over)
                       for rule, auto_over in (("fixed_0.5", {}), ("min_precision_0.9", {"min_precision": 0.9}))}
    (work / "eval").mkdir(exist_ok=True)
    (work / "eval" / f"{name}.json").write_text(json.dumps(out))
    return out


def _auto_precision(work: Path, disc_dir: Path, rest: list[dict], tag: str, over: dict) -> dict:
    """auto_score on ``rest`` (candidates no human saw); the precision of what it accepts, by the judge."""
    from rorem_core.data.formats import read_candidates, write_candidates
    from rorem_core.reward.metrics import within_group_auc
    from rorem_core.stages import auto_score

    ids = {v["id"] for v in rest}
    manifest = work / "cands" / f"rest_{tag}.json"
    write_candidates(manifest, [c for c in read_candidates(work / "cands/candidates.json") if c.id in ids])
    # the pool's hidden GT gives auto_score's own auto-acceptance precision (evaluation/acceptance.py)
    res = auto_score.run(_cfg("auto_score", **over), disc_dir, manifest, work / "auto" / tag, hidden=work / "hidden")
    prec = res.metrics["auto_precision"] or {}
    scored = {c.id: c.score for c in read_candidates(work / "auto" / tag / "candidates.json")}
    within = within_group_auc([v["good"] for v in rest], [scored[v["id"]] for v in rest], [v["input_id"] for v in rest])
    return {"n_unreviewed": len(rest), "n_accepted": res.metrics["n_accepted"], "precision": prec.get("precision"),
            "threshold": res.metrics["threshold"], "rule": res.metrics["threshold_rule"], "within_input": within}


def table(work: Path) -> str:
    from rorem_core.evaluation.rounds_table import band_success, paired_change

    base = json.loads((work / "eval/base/per_image.json").read_text())
    verdicts = json.loads((work / "verdicts.json").read_text())
    lines = [f"validation split: {len(base)} images; pool-{POOL_ROUND}: {len({v['input_id'] for v in verdicts})} inputs, "
             f"{len(verdicts)} candidates, judged clean {100 * np.mean([v['good'] for v in verdicts]):.1f} %",
             "| recipe | new triplets (hard) x repeats | easy % [95 % CI] | hard % [95 % CI] | easy vs base | hard vs base |",
             "|---|---|---|---|---|---|"]
    extra = sorted(d.name for d in (work / "eval").iterdir() if (d / "per_image.json").is_file()
                   and d.name not in RECIPES and d.name != "base")
    for name in ["base", *RECIPES, *extra]:
        f = work / "eval" / name / "per_image.json"
        if not f.is_file():
            continue
        rows = json.loads(f.read_text())
        info = json.loads((work / "eval" / f"{name}.json").read_text()) if name != "base" else None
        cells = [f"{name}", info["what"] if info else "-"]
        for band in ("easy", "hard"):
            s = band_success(rows, band)
            cells.append(f"{100 * s['rate']:.1f} [{100 * s['ci95'][0]:.1f}, {100 * s['ci95'][1]:.1f}]" if s else "-")
        for band in ("easy", "hard"):
            c = paired_change(base, rows, band) if name != "base" else None
            cells.append(f"{100 * c['change']:+.1f} [{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}]" if c else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--tiny", action="store_true", help="prepare with tiny sizes: a wiring check, not a measurement")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--init", type=Path, help="train: fine-tune this remover instead of the base; evaluate: the model")
    p.add_argument("--name", help="train with --init / evaluate: the row's name; disc: a tag for the model's name")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="disc: a train_discriminator override (repeatable), e.g. rank_weight=1")
    p.add_argument("step", choices=["prepare", "train", "disc", "evaluate", "table"])
    p.add_argument("recipe", nargs="?", help=f"train: one of {', '.join(RECIPES)}; disc: the share of inputs judged")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    a.workdir.mkdir(parents=True, exist_ok=True)
    if a.step == "prepare":
        prepare(a.workdir.resolve(), "tiny" if a.tiny else "full")
    elif a.step == "train":
        if a.recipe not in RECIPES:
            p.error("train needs a RECIPE: " + ", ".join(RECIPES))
        if a.init and not a.name:
            p.error("train --init needs --name (the row of the fine-tuned model)")
        train(a.workdir.resolve(), a.recipe, a.init.resolve() if a.init else None, a.name)
    elif a.step == "evaluate":
        if not (a.init and a.name):
            p.error("evaluate needs --init MODEL and --name NAME")
        evaluate_model(a.workdir.resolve(), a.name, a.init.resolve())
    elif a.step == "disc":
        from benchmarks.bench_rounds import parse_sets

        print(disc(a.workdir.resolve(), float(a.recipe or 1.0), parse_sets(a.set), a.name))
    print(table(a.workdir.resolve()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
