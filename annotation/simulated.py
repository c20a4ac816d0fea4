"""SIMULATED annotators: named users (``sim-annotator-K@simulated.local``) who label through the real
Label Studio API from the hidden ground truth, for unattended runs and tests. Never a person.

Review, ``simulated.judge: psnr`` (default): the oracle says good when the result's masked PSNR against the
hidden GT is >= 20 dB (:func:`rorem_core.evaluation.metrics.oracle_success`); a bad result gets the reason
``object_remains`` when it is closer (inside the mask) to the source than to the GT, else ``artifacts``.
Pairwise: the result with the higher masked PSNR against the GT is preferred.
``simulated.judge: judge``: the verdict, reason and graded score of :func:`rorem_core.evaluation.judge.judge`
(calibrated on human judgements) replace PSNR in both.
Gold tasks (``push.json``): the known answer, which is what the oracle says of a GT (good) or of the
unedited source (bad, object remains).
Each annotator flips that judgement with its own error rate (see
:class:`annotation.config.SimulatedConfig`) and skips a task with ``skip_rate``; every decision is
a pure function of (seed, annotator, task key), so reruns are reproducible and already-labelled
tasks are left alone (labelling twice adds nothing).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annotation.client import LabelStudioClient
from annotation.config import AnnotationConfig
from annotation.convert import BAD, GOOD, PREF, QUALITY, REASON
from rorem_core.data.formats import Candidate, FormatError, read_candidates, read_hidden_gt
from rorem_core.data.images import load_mask, load_rgb
from rorem_core.evaluation.metrics import ORACLE_PSNR_DB, masked_psnr

SIM_LEAD_TIME_S = 1.0  # recorded lead time of simulated labels (real people take longer)


@dataclass
class SimulationReport:
    created: dict[str, int] = field(default_factory=dict)   # project kind -> annotations created
    skipped: dict[str, int] = field(default_factory=dict)   # project kind -> cancelled (skipped) ones
    already: dict[str, int] = field(default_factory=dict)   # project kind -> (task, annotator) already done


class Oracle:
    """Masked PSNR of each candidate's result against the hidden GT (cached), or the judge's verdict."""

    def __init__(self, candidates: list[Candidate], base: Path, gt: dict[str, Path], rule: str = "psnr"):
        self.base, self.gt, self.rule = Path(base), gt, rule
        self.cands = {c.id: c for c in candidates}
        self._psnr: dict[str, tuple[float, float]] = {}
        self._judged: dict = {}

    def judged(self, cid: str):
        """The judge's :class:`~rorem_core.evaluation.judge.Verdict` for the candidate (cached)."""
        if cid not in self._judged:
            from rorem_core.evaluation.judge import judge

            c = self.cands[cid]
            if c.input_id not in self.gt:
                raise FormatError(f"no hidden GT for input {c.input_id!r} (candidate {cid}); "
                                  "check data/hidden/round-N/meta.json")
            self._judged[cid] = judge(load_rgb(self.base / c.source), load_mask(self.base / c.mask),
                                      load_rgb(self.base / c.result), load_rgb(self.gt[c.input_id]))
        return self._judged[cid]

    def preference(self, cid: str) -> float:
        """Higher = preferred in a pair: masked PSNR (dB) or the judge's graded score."""
        return self.judged(cid).score if self.rule == "judge" else self.psnr(cid)[0]

    def psnr(self, cid: str) -> tuple[float, float]:
        """(masked PSNR result vs GT, masked PSNR result vs source), dB."""
        if cid not in self._psnr:
            c = self.cands[cid]
            if c.input_id not in self.gt:
                raise FormatError(f"no hidden GT for input {c.input_id!r} (candidate {cid}); "
                                  "check data/hidden/round-N/meta.json")
            result, mask = load_rgb(self.base / c.result), load_mask(self.base / c.mask)
            self._psnr[cid] = (masked_psnr(result, load_rgb(self.gt[c.input_id]), mask),
                               masked_psnr(result, load_rgb(self.base / c.source), mask))
        return self._psnr[cid]

    def review(self, cid: str) -> tuple[str, list[str]]:
        if self.rule == "judge":
            v = self.judged(cid)
            return (GOOD, []) if v.good else (BAD, [v.reason])
        to_gt, to_src = self.psnr(cid)
        if to_gt >= ORACLE_PSNR_DB:
            return GOOD, []
        return BAD, ["object_remains" if to_src > to_gt else "artifacts"]


def _uniforms(seed: int, annotator: int, key: str) -> tuple[float, float]:
    """Two U(0,1) draws that depend only on (seed, annotator, task key)."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    u = np.random.default_rng([seed, annotator, h]).random(2)
    return float(u[0]), float(u[1])


def ensure_simulated_users(client: LabelStudioClient, names: tuple[str, ...]) -> dict[str, int]:
    """Create the simulated accounts (no password: they cannot log in to the UI); email -> user id."""
    have = {u["email"]: u["id"] for u in client.users()}
    for name in names:
        if name not in have:
            have[name] = client.create_user(name, first_name="SIMULATED", last_name="annotator")["id"]
    return {n: have[n] for n in names}


def _label_project(client: LabelStudioClient, cfg: AnnotationConfig, project_id: int, kind: str,
                   oracle: Oracle, users: dict[str, int], report: SimulationReport,
                   gold: dict[str, str] | None = None) -> None:
    sim = cfg.simulated
    rates = sim.rates()
    names = list(users)
    per_task = min(cfg.overlap, len(names))
    tasks = sorted(client.iter_tasks(project_id, include="id,data,annotators"), key=lambda t: t["id"])
    for t_index, task in enumerate(tasks):
        data, done_by = task["data"], set(task.get("annotators") or [])
        key = data.get("candidate_id") if kind == "review" else data.get("pair_id")
        if key is None:
            continue
        for j in range(per_task):
            k = (t_index + j) % len(names)
            if users[names[k]] in done_by:
                report.already[kind] = report.already.get(kind, 0) + 1
                continue
            u_skip, u_err = _uniforms(sim.seed, k, f"{kind}:{key}")
            if u_skip < sim.skip_rate:
                client.create_annotation(task["id"], [], completed_by=users[names[k]], was_cancelled=True)
                report.skipped[kind] = report.skipped.get(kind, 0) + 1
                continue
            flip = u_err < rates[k]
            result = (_gold_result(gold[key], flip) if kind == "review" and key in (gold or {})
                      else _review_result(oracle, key, flip) if kind == "review" else _pair_result(oracle, data, flip))
            client.create_annotation(task["id"], result, completed_by=users[names[k]], lead_time=SIM_LEAD_TIME_S)
            report.created[kind] = report.created.get(kind, 0) + 1


def _review_result(oracle: Oracle, cid: str, flip: bool) -> list[dict]:
    label, reasons = oracle.review(cid)
    if flip:
        label, reasons = (BAD, ["artifacts"]) if label == GOOD else (GOOD, [])
    result = [{"from_name": QUALITY, "to_name": "img_result", "type": "choices", "value": {"choices": [label]}}]
    if reasons:
        result.append({"from_name": REASON, "to_name": "img_result", "type": "choices",
                       "value": {"choices": reasons}})
    return result


def _gold_result(answer: str, flip: bool) -> list[dict]:
    """A gold task: its known answer (what the oracle would say: GT = good, source = object remains)."""
    label = (BAD if answer == GOOD else GOOD) if flip else answer
    result = [{"from_name": QUALITY, "to_name": "img_result", "type": "choices", "value": {"choices": [label]}}]
    if label == BAD:
        result.append({"from_name": REASON, "to_name": "img_result", "type": "choices",
                       "value": {"choices": ["object_remains" if answer == BAD else "artifacts"]}})
    return result


def _pair_result(oracle: Oracle, data: dict, flip: bool) -> list[dict]:
    left, right = oracle.preference(data["candidate_left"]), oracle.preference(data["candidate_right"])
    side = "left" if left >= right else "right"
    if flip:
        side = "right" if side == "left" else "left"
    return [{"from_name": PREF, "to_name": "left", "type": "pairwise", "value": {"selected": side}}]


def gold_answers(setup: Path | None) -> dict[str, str]:
    """Gold task key -> answer from a round's ``push.json`` (none when it is missing or has no gold)."""
    if setup is None or not Path(setup).is_file():
        return {}
    gold = json.loads(Path(setup).read_text(encoding="utf-8")).get("gold") or {}
    return {k: g["answer"] for k, g in (gold.get("tasks") or {}).items()}


def simulate_round(client: LabelStudioClient, cfg: AnnotationConfig, round_id: int, candidates_path: Path,
                   hidden_meta: Path, setup: Path | None = None) -> SimulationReport:
    """Let every simulated annotator label its share of the round's review and pairwise tasks.

    ``setup``: the round's ``push.json`` (default ``data/annotations/round-N/push.json`` next to the
    ``data/candidates/round-N`` folder), whose gold answers the simulated annotators know like the oracle."""
    candidates_path = Path(candidates_path)
    if setup is None:
        setup = candidates_path.parent.parent.parent / "annotations" / f"round-{round_id}" / "push.json"
    gold = gold_answers(setup)
    oracle = Oracle(read_candidates(candidates_path), candidates_path.parent, read_hidden_gt(hidden_meta),
                    rule=cfg.simulated.judge)
    users = ensure_simulated_users(client, cfg.simulated.names)
    report = SimulationReport()
    kinds = ("review", "pairwise") if cfg.pairwise else ("review",)
    for kind in kinds:
        proj = client.find_project(cfg.project_title(round_id, kind))
        if proj is not None:
            _label_project(client, cfg, proj["id"], kind, oracle, users, report, gold)
    return report
