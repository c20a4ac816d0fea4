"""Annotation settings (the ``annotation:`` section of params.yaml), declared once.

Nothing here is secret: the API token comes from the environment or a git-ignored file
(:mod:`annotation.server`), never from params.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SIMULATED_DOMAIN = "@simulated.local"


class SimulatedConfig(BaseModel):
    """Simulated annotators: they label through the real API using the hidden ground truth.

    Annotator ``k`` (0-based, of ``n``) flips the oracle's judgement with probability
    ``error_rate + disagreement * k / max(n - 1, 1)``: with ``disagreement = 0`` all share one error
    rate; with ``error_rate = 0, disagreement = 1`` the first is always right and the last always
    wrong (a known, maximal disagreement for tests).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    names: tuple[str, ...] = ("sim-annotator-1@simulated.local", "sim-annotator-2@simulated.local",
                              "sim-annotator-3@simulated.local")  # emails; must end in @simulated.local
    error_rate: float = Field(0.05, ge=0.0, le=1.0)    # P(label flipped) for annotator 0
    error_rates: tuple[float, ...] | None = None       # one per name; when set, replaces error_rate/disagreement
    disagreement: float = Field(0.0, ge=0.0, le=1.0)   # extra flip probability for the last annotator
    skip_rate: float = Field(0.0, ge=0.0, le=1.0)      # P(a task is skipped = cancelled annotation)
    seed: int = 0                                      # decisions are a pure function of (seed, annotator, task)
    judge: Literal["psnr", "judge"] = "psnr"           # what they see: masked PSNR >= 20 dB, or the judge

    @field_validator("names")
    @classmethod
    def _clearly_simulated(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        bad = [n for n in names if not n.endswith(SIMULATED_DOMAIN) or "sim" not in n.split("@")[0]]
        if bad:
            raise ValueError(f"simulated annotator names {bad} must look like "
                             f"'sim-annotator-1{SIMULATED_DOMAIN}' so they are never mistaken for people")
        if len(set(names)) != len(names):
            raise ValueError(f"simulated annotator names {list(names)} contain duplicates")
        return names

    @model_validator(mode="after")
    def _one_rate_each(self) -> "SimulatedConfig":
        rates = self.error_rates
        if rates is not None and (len(rates) != len(self.names) or not all(0.0 <= r <= 1.0 for r in rates)):
            raise ValueError(f"annotation.simulated.error_rates={list(rates)}: give one rate in [0, 1] per name "
                             f"({len(self.names)} names), or leave it empty to use error_rate/disagreement")
        return self

    def rates(self) -> list[float]:
        """Each annotator's flip probability: ``error_rates`` if given, else the error_rate/disagreement ramp."""
        if self.error_rates is not None:
            return list(self.error_rates)
        n = len(self.names)
        return [min(1.0, self.error_rate + self.disagreement * k / max(n - 1, 1)) for k in range(n)]


class GoldConfig(BaseModel):
    """Gold tasks (known answers) mixed into each round's review project, and what a low score does.

    ``share`` is the fraction of the review project's tasks that are gold: n_gold = round(share / (1 - share)
    * n_real) (so 1 is impossible). Known-good gold needs the pool's hidden GT or earlier unanimous "good"
    labels; without any, the round proceeds without gold (gold of only "bad" answers would reward an
    annotator who always answers "bad").
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    share: float = 0.1                  # of the review project's tasks; in [0, 1)
    unanimous: bool = False             # also draw gold from earlier rounds' unanimous labels
    unanimous_min_votes: int = Field(2, ge=2)   # "unanimous" needs at least this many agreeing votes
    examples: bool = True               # keep one good and one bad gold item out of the tasks for the instructions
    seed: int = 0                       # which inputs become gold: a pure function of (seed, round)
    min_accuracy: float = Field(0.8, ge=0.0, le=1.0)   # flag an annotator below this gold accuracy ...
    min_answers: int = Field(5, ge=1)   # ... once they answered at least this many gold tasks
    flagged_votes: Literal["exclude", "downweight", "keep"] = "exclude"   # rule for a flagged annotator's votes
    flagged_weight: float = Field(0.5, ge=0.0, le=1.0)  # their vote weight under "downweight"

    @field_validator("share")
    @classmethod
    def _share_below_one(cls, share: float) -> float:
        if not 0.0 <= share < 1.0:
            raise ValueError(f"annotation.gold.share={share}: must be in [0, 1) (the fraction of review tasks "
                             "that are gold; 0 turns gold tasks off, 1 would leave no real task)")
        return share


class AnnotationConfig(BaseModel):
    """Label Studio service and round-project settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = "127.0.0.1"          # the server binds here; loopback only (a team server goes behind a proxy)
    port: int = Field(8080, ge=1, le=65535)
    admin_email: str = "admin@rorem.local"
    project_prefix: str = "rorem"    # project titles: "<prefix> round <N> review|pairwise"
    overlap: int = Field(1, ge=1)    # annotators per task (Label Studio maximum_annotations)
    min_labels: int = Field(1, ge=1)  # valid labels a task needs to count as done (gate) and be converted
    pairwise: bool = True            # also push a pairwise project (pairs of results of one input)
    max_pairs_per_input: int = Field(6, ge=0)  # cap on pairs per input (K results give K(K-1)/2)
    model_version: str = "discriminator"        # prediction label when a candidate has no score_model
    import_batch: int = Field(1000, ge=1)       # tasks per import request
    timeout_s: float = Field(60.0, gt=0)        # per HTTP request
    retries: int = Field(6, ge=0)               # extra attempts after a connection error / 5xx (~23 s in all)
    backoff_s: float = Field(0.5, ge=0)         # first wait; doubles per attempt
    backoff_max_s: float = Field(8.0, ge=0)     # cap per wait: at most retries * backoff_max_s in total
    start_timeout_s: float = Field(180.0, gt=0)  # wait for /health after `up` (a cold start migrates ~40 s)
    label_studio_version: str = "1.23.2"        # pinned server version in <project>/.venv-ls
    prefill: bool = False                       # show the discriminator's verdict pre-filled (default: blind review)
    instructions: bool = True                   # show labeling instructions (with gold examples) before labeling
    gold: GoldConfig = GoldConfig()
    simulated: SimulatedConfig = SimulatedConfig()

    @field_validator("host")
    @classmethod
    def _loopback(cls, host: str) -> str:
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"annotation.host={host!r}: the managed server binds loopback only "
                             f"({', '.join(LOOPBACK_HOSTS)}); expose it through a reverse proxy instead")
        return host

    @model_validator(mode="after")
    def _labels_fit_overlap(self) -> "AnnotationConfig":
        if self.min_labels > self.overlap:
            raise ValueError(f"annotation.min_labels={self.min_labels} exceeds annotation.overlap="
                             f"{self.overlap}: a task can never collect more labels than its overlap")
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def project_title(self, round_id: int, kind: str) -> str:
        return f"{self.project_prefix} round {round_id} {kind}"
