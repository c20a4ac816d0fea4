"""The round contract: the order of a round's stages and where each round's files live.

This module is the one place that says both. ``dvc.yaml`` declares exactly these stages and paths
(tests/core/test_contract.py checks it), the Prefect flow runs the stages in this order, and the
report, ``rorem status`` and the tests' fakes read their paths from here.

A round N, stage by stage (the human part in the middle is not a DVC stage: its result, the frozen
Label Studio export ``data/annotations/round-N``, is data that ``dvc add`` versions):

    bootstrap (once) -> train_remover -> generate -> select
    -> [push -> annotators -> pull -> dvc add]
    -> labels -> train_discriminator -> auto_score -> trainset -> build_pairs -> train_dpo -> distill
    -> train_rl -> evaluate, evaluate_dpo, evaluate_lcm, evaluate_rl -> report (all rounds so far)

Round N's inputs (``rounds:`` in params.yaml, typed by ``rorem_core.config.RoundSpec``):
N = 1 starts from the bootstrap (base model, seed triplets, round 0's empty labels and
no-discriminator marker); N > 1 from round N-1's remover, training set, discriminator and labels.
"""

from __future__ import annotations

from dataclasses import dataclass

ONCE = ("bootstrap",)
BEFORE_GATE = ("train_remover", "generate", "select")
GATE = ("push", "gate", "pull")              # Label Studio and annotators (gate = the wait); not DVC stages
AFTER_GATE = ("labels", "train_discriminator", "auto_score", "trainset", "build_pairs", "train_dpo", "distill",
              "train_rl", "evaluate", "evaluate_dpo", "evaluate_lcm", "evaluate_rl")
FINAL = ("report",)                           # across all rounds so far
ROUND_STAGES = BEFORE_GATE + AFTER_GATE       # declared per round in dvc.yaml (``name@N``)
DVC_STAGES = ONCE + ROUND_STAGES + FINAL      # every stage dvc.yaml declares
REQUIRED = ("train_remover", "generate")      # a round without these is not a round

# outputs and metrics of every per-round stage; {n} = the round number
OUTS: dict[str, tuple[str, ...]] = {
    "train_remover": ("models/remover/round-{n}",),
    "generate": ("data/candidates/round-{n}",),
    "select": ("data/selected/round-{n}",),
    "labels": ("data/labels/round-{n}",),
    "train_discriminator": ("models/discriminator/round-{n}",),
    "auto_score": ("data/auto/round-{n}",),
    "trainset": ("data/trainset/round-{n}",),
    "build_pairs": ("data/pairs/round-{n}",),
    "train_dpo": ("models/dpo/round-{n}",),
    "distill": ("models/lcm/round-{n}",),
    "train_rl": ("models/rl/round-{n}",),
    **{name: (f"results/{name}/round-{{n}}/samples.png", f"results/{name}/round-{{n}}/per_image.json",
              f"results/{name}/round-{{n}}/gallery")      # the report's HTML gallery reads it
       for name in ("evaluate", "evaluate_dpo", "evaluate_lcm", "evaluate_rl")},
}
METRICS: dict[str, str] = {
    **{name: f"results/{name}/round-{{n}}.json" for name in
       ("train_remover", "select", "labels", "train_discriminator", "auto_score", "trainset", "build_pairs",
        "train_dpo", "distill", "train_rl")},
    **{name: f"results/{name}/round-{{n}}/metrics.json" for name in ("evaluate", "evaluate_dpo", "evaluate_lcm",
                                                                     "evaluate_rl")},
}
# A LoRA model stores only its own adapter; its rorem_model.json names the adapters it was trained on
# (rorem_core/models/loading.py), which live in these other outputs of the same round. A stage that
# reads the model must list them as DVC deps too (tests/core/test_contract.py checks dvc.yaml), so DVC
# checks them out and sees a change under the adapter. (A LoRA remover trained on the previous round's
# LoRA remover stacks across rounds; that chain is the remover's ``init`` dep, one round back.)
MODEL_STACK: dict[str, tuple[str, ...]] = {
    "models/dpo/round-{n}": ("models/remover/round-{n}",),
    "models/lcm/round-{n}": ("models/dpo/round-{n}", "models/remover/round-{n}"),
    "models/rl/round-{n}": ("models/remover/round-{n}",),
}
BOOTSTRAP_OUTS = ("models/base", "data/seed", "data/test", "data/pools", "data/hidden", "data/labels/round-0",
                  "models/discriminator/round-0")
BOOTSTRAP_METRICS = "results/bootstrap/metrics.json"
REPORT_DIR = "reports"


def round_entry(n: int) -> dict[str, str]:
    """The ``rounds:`` entry of round ``n`` under the contract (what ``rorem round`` appends)."""
    if n < 1:
        raise ValueError(f"round {n}: rounds start at 1 (round 0 is the bootstrap)")
    prev = RoundPaths(n - 1)
    return {"init": "models/base" if n == 1 else prev.remover,
            "train": "data/seed" if n == 1 else prev.trainset,
            "pool": f"data/pools/round-{n}",
            "prev_disc": prev.discriminator, "prev_labels": prev.labels}


ORDER = ONCE + BEFORE_GATE + GATE + AFTER_GATE + FINAL   # what a round runs, start to finish


def position(step: str) -> str:
    """Where ``step`` (a stage, ``stage@N``, or a gate step) is in a round: ``"7/17, after the gate"``."""
    name = step.split("@")[0]
    if name not in ORDER:
        return "not a round step"
    phase = ("before the gate" if name in ONCE + BEFORE_GATE else "at the gate" if name in GATE
             else "after the gate" if name in AFTER_GATE else "final")
    return f"{ORDER.index(name) + 1}/{len(ORDER)}, {phase}"


def hidden_for_pool(pool: str) -> str:
    """The hidden ground truth of a pool: data/pools/round-K -> data/hidden/round-K."""
    from pathlib import Path

    parts = Path(pool).parts
    if "pools" not in parts:
        raise ValueError(f"pool {pool!r}: expected a path like data/pools/round-K (its hidden GT is "
                         "data/hidden/round-K); simulated annotators need that ground truth")
    i = parts.index("pools")
    return Path(*parts[:i], "hidden", *parts[i + 1:]).as_posix()


def outs(stage: str, n: int) -> tuple[str, ...]:
    return tuple(p.format(n=n) for p in OUTS[stage])


def metrics(stage: str, n: int) -> str:
    return METRICS[stage].format(n=n)


@dataclass(frozen=True)
class RoundPaths:
    """Round ``n``'s files, relative to the project root. Round 0 is the bootstrap's."""

    n: int

    def _r(self, stem: str) -> str:
        return f"{stem}/round-{self.n}"

    remover = property(lambda s: s._r("models/remover"))
    discriminator = property(lambda s: s._r("models/discriminator"))
    dpo = property(lambda s: s._r("models/dpo"))
    lcm = property(lambda s: s._r("models/lcm"))
    rl = property(lambda s: s._r("models/rl"))
    pool = property(lambda s: s._r("data/pools"))
    hidden = property(lambda s: s._r("data/hidden"))           # the pool's hidden GT (synthetic data only)
    candidates_dir = property(lambda s: s._r("data/candidates"))
    candidates = property(lambda s: s._r("data/candidates") + "/candidates.json")
    selected = property(lambda s: s._r("data/selected"))
    selection = property(lambda s: s._r("data/selected") + "/selection.json")
    annotations = property(lambda s: s._r("data/annotations"))   # the frozen human export (dvc add)
    frozen = property(lambda s: s._r("data/annotations") + ".dvc")
    labels = property(lambda s: s._r("data/labels"))
    auto = property(lambda s: s._r("data/auto"))
    trainset = property(lambda s: s._r("data/trainset"))
    pairs = property(lambda s: s._r("data/pairs"))

    def model(self, kind: str) -> str:
        """The round's model of ``kind``: sft (the remover), dpo, lcm or rl."""
        return {"sft": self.remover, "dpo": self.dpo, "lcm": self.lcm, "rl": self.rl}[kind]

    def metrics(self, stage: str) -> str:
        return metrics(stage, self.n)

    def train_summary(self, kind: str) -> str:
        """``train_summary.json`` of the round's remover / discriminator / dpo / rwd (LCM student)."""
        folder = {"remover": self.remover, "discriminator": self.discriminator, "dpo": self.dpo,
                  "rwd": self.lcm, "rl": self.rl}[kind]
        return f"{folder}/train_summary.json"
