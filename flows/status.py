"""``rorem status``: current round, its stage, annotation progress and what it waits for.

Reads the round state files the flow writes (``.rorem/rounds/round-N.json``), git tags and, when
they run, Label Studio (live progress) and the ``rorem serve`` server. Never imports prefect.
"""

from __future__ import annotations

import time
from pathlib import Path

from flows.settings import served_url
from rorem_core import contract
from tasks.rounds import Layout, declared_rounds, read_state, tag_exists


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    s = max(0, time.time() - ts)
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago" if s < 7200 else f"{s / 3600:.1f} h ago"


def live_progress(root: Path, n: int) -> dict | None:
    """Label Studio progress of round n when the managed server answers, else None."""
    from annotation.cli import load_config
    from annotation.client import LabelStudioError
    from annotation.progress import round_progress
    from annotation.server import LabelStudioServer

    server = LabelStudioServer(root=root, cfg=load_config(root))
    try:
        if not server.status()["running"]:
            return None
        with server.client() as c:
            return round_progress(c, server.cfg, n)
    except (LabelStudioError, OSError):
        return None


def annotator_flags(root: Path, rounds: list[int]) -> dict[int, dict]:
    """Per pulled round: review mode, gold and the annotators flagged below the gold accuracy threshold
    (from ``data/annotations/round-N/summary.json``, written by the pull)."""
    import json

    out = {}
    for n in rounds:
        path = root / Layout(root, n).paths.annotations / "summary.json"
        try:
            q = json.loads(path.read_text()).get("quality") or {}
        except (OSError, ValueError):
            continue
        rows = q.get("annotators") or {}
        out[n] = {"mode": q.get("mode"), "gold": (q.get("gold") or {}).get("n_gold", 0), "rule": q.get("rule"),
                  "min_accuracy": q.get("min_accuracy"), "excluded_votes": q.get("excluded_votes", 0),
                  "flagged": {w: {"gold_accuracy": rows[w].get("gold_accuracy"), "gold_answers": rows[w].get("gold_answers")}
                              for w in q.get("flagged") or [] if w in rows}}
    return out


def collect(root: Path, live: bool = True) -> dict:
    root = Path(root).resolve()
    rounds = declared_rounds(root / "params.yaml")
    per = {}
    for n in sorted(rounds):
        st = read_state(Layout(root, n).state)
        per[n] = {"status": st.get("status") or ("completed" if tag_exists(root, f"round-{n}") else "not started"),
                  "stage": st.get("stage"), "waiting_for": st.get("waiting_for"), "updated": st.get("updated"),
                  "error": st.get("error"), "tag": f"round-{n}" if tag_exists(root, f"round-{n}") else None,
                  "report": st.get("report")}
    current = next((n for n in sorted(per) if per[n]["status"] != "completed"), max(per, default=None))
    out = {"root": str(root), "rounds": per, "current": current, "prefect_server": served_url(root),
           "annotator_quality": annotator_flags(root, sorted(rounds))}
    if live and current is not None and per[current]["status"] in ("waiting", "running"):
        out["annotation"] = live_progress(root, current)
    return out


def format_status(s: dict) -> str:
    lines = [f"project {s['root']}"]
    for n, r in s["rounds"].items():
        extra = (f", stage {r['stage']} ({contract.position(r['stage'])})"
                 if r["stage"] and r["status"] != "completed" else "")
        lines.append(f"  round {n}: {r['status']}{extra} (updated {_ago(r['updated'])})"
                     + (f" [{r['tag']}]" if r["tag"] else ""))
    cur = s["current"]
    if cur is not None:
        r = s["rounds"][cur]
        lines.append(f"current round: {cur} ({r['status']})")
        if r["waiting_for"]:
            lines.append(f"  waiting for {r['waiting_for']}")
        if r["error"]:
            lines.append(f"  last error: {r['error'][:300]}\n  run `rorem round` to resume (finished stages are skipped)")
    a = s.get("annotation")
    if a:
        for kind in ("review", "pairwise"):
            if kind in a:
                k = a[kind]
                lines.append(f"  {kind}: {k['done']}/{k['total']} tasks done, {k['annotations']} annotations"
                             + (f" ({', '.join(f'{u}: {c}' for u, c in k['per_annotator'].items())})"
                                if k.get("per_annotator") else ""))
    for n, q in (s.get("annotator_quality") or {}).items():
        if q["flagged"]:
            who = ", ".join(f"{w} ({100 * (f['gold_accuracy'] or 0):.0f}% of {f['gold_answers']} gold)"
                            for w, f in q["flagged"].items())
            lines.append(f"  round {n}: FLAGGED annotators below {100 * (q['min_accuracy'] or 0):.0f}% gold accuracy: "
                         f"{who}; rule {q['rule']} ({q['excluded_votes']} vote(s) excluded)")
        elif q["gold"] == 0:
            lines.append(f"  round {n}: {q['mode']} review, no gold tasks (annotator accuracy not measured)")
    lines.append(f"prefect server: {s['prefect_server'] or 'not running (`rorem serve` starts it)'}")
    return "\n".join(lines)
