"""Rounds that learn, as a person judges them (issue 13, parts 2-4 and 6): one table from the rounds'
metrics files, the bars those parts set, and the figures that did not improve, said in words.

Pure: :func:`rounds_table` takes already-loaded JSON (what :func:`load` reads) and returns rows; the
report (evaluation/report.py) and ``benchmarks/bench_rounds.py`` render the same rows.

Per round N (``rounds[N]`` = the metrics of :data:`report.FILES` + ``per_image``, evaluate's
``results/evaluate/round-N/per_image.json``); round 0 is the **base remover** (the bootstrap's model),
whose evaluation ``results/evaluate/round-0/`` is written by bench_rounds.py (the round flow does not
evaluate the base):

  Table-1 counts       judged / accepted by humans and by the discriminator (auto), training-set size,
                       success by humans and by the discriminator (accepted / judged, Wilson 95 %)
  judged success       the round's remover on the test split, per band, success = the judge's ``good``
                       (per image ``judge_good``; ``success`` where no judge verdict was recorded)
  change vs base/prev  paired per test image (same images, same seeds): mean of d_i = s_i(N) - s_i(ref)
                       in {-1, 0, 1}, 95 % interval mean +- 1.96 sd(d) / sqrt(n) (normal approximation)
  ROC-AUC              the round's discriminator on its held-out human labels, DeLong 95 % interval
  within-input AUC     the same labels, only pairs of candidates of one input (can it pick among siblings?)
  auto precision       share of auto-accepted candidates the judge calls clean (auto_score's
                       ``auto_precision``), next to the human acceptance rate
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rorem_core.evaluation.metrics import paired_ci95, proportion_ci95
from rorem_core.evaluation.report import FILES, dig, fmt, md_table, read_json, round_row

NA = "n/a"
BANDS = ("easy", "hard")
PER_IMAGE = "results/evaluate/round-{n}/per_image.json"
# the bars of issue 13 (parts 2-4)
CEILING_MIN = 0.95          # the autoencoder ceiling judged clean, each band
HARD_GAIN_MIN = 0.10        # last round vs base, hard band, judged success (and the paired interval above 0)
AUC_MIN, AUC_HALF_MAX = 0.80, 0.10
PRECISION_MIN = 0.90


def load(root: Path, rounds: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Round 0 (the base's evaluation, when present) and each of ``rounds``: metrics files + per_image."""
    out = {}
    for n in sorted({0, *rounds}):
        m = {name: read_json(root / pat.format(n=n)) for name, pat in FILES.items()}
        m["per_image"] = read_json(root / PER_IMAGE.format(n=n))
        out[n] = m
    return out


def _good(row: Mapping) -> bool:
    return bool(row["judge_good"] if row.get("judge_good") is not None else row.get("success"))


def band_success(per_image: Sequence[Mapping] | None, band: str) -> dict | None:
    """{n, k, rate, ci95} of judged success on one band of the test split; None without per-image rows."""
    rows = [r for r in per_image or [] if r.get("band") == band]
    if not rows:
        return None
    k = sum(_good(r) for r in rows)
    return {"n": len(rows), "k": k, "rate": k / len(rows), "ci95": list(proportion_ci95(k, len(rows)))}


def paired_change(ref: Sequence[Mapping] | None, new: Sequence[Mapping] | None, band: str) -> dict | None:
    """Paired change of judged success on ``band`` from ``ref`` to ``new`` (images matched by id):
    {n, change, ci95}; None when no image is in both."""
    before = {r["id"]: _good(r) for r in ref or [] if r.get("band") == band and "id" in r}
    pairs = [(int(before[r["id"]]), int(_good(r))) for r in new or [] if r.get("band") == band and r.get("id") in before]
    if not pairs:
        return None
    c = paired_ci95(*zip(*pairs))
    return {"n": c["n"], "change": c["delta"], "ci95": c["ci95"]}


def _rate(k: int | None, n: int | None) -> dict | None:
    return None if k is None or not n else {"rate": k / n, "ci95": list(proportion_ci95(k, n))}


def _ceiling(m: Mapping) -> dict[str, float | None]:
    ev = m.get("evaluate")
    return {b: dig(ev, "ae_ceiling", f"band_{b}", "judged_success_rate") for b in BANDS}


def round_figures(n: int, m: Mapping, base: Mapping | None, prev: Mapping | None) -> dict[str, Any]:
    """Every figure of round ``n`` (module docstring); ``base`` / ``prev`` = round 0's / round n-1's data."""
    t1 = round_row(n, {k: m.get(k) for k in ("annotations", "auto_score", "trainset", "evaluate")}, f"round-{n}")
    held = dig(m.get("train_discriminator"), "heldout", "all") or {}
    prec = dig(m.get("auto_score"), "auto_precision") or {}
    row = {"round": n, **{k: t1[k] for k in ("human_judged", "human_accepted", "disc_judged", "disc_accepted",
                                           "train_total")},
           "human_rate": _rate(t1["human_accepted"], t1["human_judged"]),
           "disc_rate": _rate(t1["disc_accepted"], t1["disc_judged"]),
           "auc": held.get("roc_auc"), "auc_ci95": held.get("roc_auc_ci95"), "auc_n": held.get("n"),
           "within_auc": dig(m.get("train_discriminator"), "heldout_within_input", "auc"),
           "within_pairs": dig(m.get("train_discriminator"), "heldout_within_input", "n_pairs"),
           "precision": prec.get("precision"), "precision_ci95": prec.get("ci95"), "precision_n": prec.get("n"),
           "auto_rule": dig(m.get("auto_score"), "threshold_rule"),
           "ceiling": _ceiling(m)}
    for b in BANDS:
        row[b] = band_success(m.get("per_image"), b)
        row[f"{b}_vs_base"] = paired_change((base or {}).get("per_image"), m.get("per_image"), b)
        row[f"{b}_vs_prev"] = paired_change((prev or {}).get("per_image"), m.get("per_image"), b) if prev else None
    return row


def rounds_table(rounds: Mapping[int, Mapping]) -> dict[str, Any]:
    """{"base": round 0's figures or None, "rows": one per round >= 1, "bars": [...], "missed": [...],
    "not_improved": [sentences]} from :func:`load`'s data (keys: round numbers, 0 = the base)."""
    base = rounds.get(0) if (rounds.get(0) or {}).get("per_image") else None
    numbers = sorted(n for n in rounds if n >= 1)
    rows = [round_figures(n, rounds[n], base, rounds.get(n - 1) if n > 1 else base) for n in numbers]
    base_row = round_figures(0, base, None, None) if base else None
    bars = check_bars(base_row, rows)
    return {"base": base_row, "rows": rows, "bars": bars, "missed": [b for b in bars if not b["ok"]],
            "not_improved": not_improved(base_row, rows)}


def _bar(name: str, ok: bool | None, seen: str) -> dict:
    return {"bar": name, "ok": bool(ok), "seen": seen if ok is not None else f"not measured ({seen})"}


def check_bars(base: Mapping | None, rows: Sequence[Mapping]) -> list[dict]:
    """Issue 13's bars, each {bar, ok, seen}; a figure that was not measured misses its bar."""
    out = []
    measured = [r["ceiling"] for r in [*reversed(rows), base or {}]
                if any(v is not None for v in r.get("ceiling", {}).values())]
    ceil = measured[0] if measured else {}      # the newest evaluation that ran the references
    for b in BANDS:
        v = ceil.get(b)
        out.append(_bar(f"part 2: autoencoder ceiling judged clean >= {CEILING_MIN:.0%} ({b} band)",
                        None if v is None else v >= CEILING_MIN, fmt(v, "%")))
    last = rows[-1] if rows else {}
    hard = last.get("hard_vs_base")
    out.append(_bar(f"part 3: last round >= base + {HARD_GAIN_MIN * 100:.0f} points on the hard band, paired "
                    "95 % interval above 0", None if hard is None else
                    hard["change"] >= HARD_GAIN_MIN and hard["ci95"][0] > 0, _change(hard)))
    for r in rows:
        for b in BANDS:
            c = r.get(f"{b}_vs_prev")
            if c is not None and c["ci95"][1] < 0:
                prev = "the base" if r["round"] == 1 else f"round {r['round'] - 1}"
                out.append(_bar(f"part 3: round {r['round']} not below {prev} on the {b} band beyond its interval",
                                False, _change(c)))
    easy = last.get("easy_vs_base")
    out.append(_bar("part 3: easy band not below the base beyond its interval",
                    None if easy is None else easy["ci95"][1] >= 0, _change(easy)))
    for r in rows:
        auc, ci = r["auc"], r["auc_ci95"]
        out.append(_bar(f"part 4: round {r['round']} discriminator held-out ROC-AUC >= {AUC_MIN} with 95 % interval "
                        f"narrower than +-{AUC_HALF_MAX}", None if auc is None or ci is None else
                        auc >= AUC_MIN and (ci[1] - ci[0]) / 2 < AUC_HALF_MAX,
                        " ".join(filter(None, (fmt(auc, "3"), _ci(ci, "3")))) + f", n={r['auc_n']}"))
        p = r["precision"]
        out.append(_bar(f"part 4: round {r['round']} auto-acceptance precision >= {PRECISION_MIN}",
                        None if p is None else p >= PRECISION_MIN,
                        _nothing_accepted(r) or f"{fmt(p, '%')} of {r['precision_n']}"))
    return out


def not_improved(base: Mapping | None, rows: Sequence[Mapping]) -> list[str]:
    """One sentence per figure of a round that is not above the previous round's (round 1: the base's
    for judged success); with the paired interval where there is one."""
    out = []
    figures = [("hard-band judged success", lambda r: (r.get("hard") or {}).get("rate"), "hard_vs_prev"),
               ("easy-band judged success", lambda r: (r.get("easy") or {}).get("rate"), "easy_vs_prev"),
               ("human acceptance rate", lambda r: (r.get("human_rate") or {}).get("rate"), None),
               ("discriminator held-out ROC-AUC", lambda r: r.get("auc"), None),
               ("auto-acceptance precision", lambda r: r.get("precision"), None)]
    for prev, r in zip([base, *rows], rows):
        if prev is None:
            continue
        for name, get, paired in figures:
            a, b = get(prev), get(r)
            if a is None or b is None or b > a:
                continue
            what = "the base" if prev["round"] == 0 else f"round {prev['round']}"
            change = f"; paired change {_change(r.get(paired))}" if paired and r.get(paired) else ""
            kind = "3" if "AUC" in name else "%"
            out.append(f"Round {r['round']}: {name} did not improve over {what} "
                       f"({fmt(a, kind)} -> {fmt(b, kind)}{change}).")
    return out


# ------------------------------------------------------------------------------ rendering


def _ci(ci: Sequence[float] | None, kind: str = "%") -> str:
    return "" if not ci else f"[{fmt(ci[0], kind)}, {fmt(ci[1], kind)}]"


def _nothing_accepted(r: Mapping) -> str | None:
    """Why a round auto-accepted nothing under ``auto_score.min_precision``; None otherwise."""
    rule = r.get("auto_rule") or {}
    if r.get("precision") is not None or rule.get("rule") != "min_precision" or rule.get("precision") is not None:
        return None
    return (f"nothing auto-accepted: no threshold is {fmt(rule['min_precision'], '%')} precise over >= "
            f"{rule['min_support']} of the discriminator's {rule['n_heldout']} held-out labels")


def _change(c: Mapping | None) -> str:
    if not c:
        return "n/a"
    pts = lambda v: f"{100 * v:+.1f}"   # noqa: E731   (percentage points)
    return f"{pts(c['change'])} pts [{pts(c['ci95'][0])}, {pts(c['ci95'][1])}] (n={c['n']})"


def _cells(r: Mapping) -> dict[str, str]:
    rate = lambda d: NA if not d else f"{fmt(d['rate'], '%')} {_ci(d['ci95'])}"   # noqa: E731
    return {"round": "base" if r["round"] == 0 else str(r["round"]),
            **{k: fmt(r.get(k)) for k in ("human_judged", "human_accepted", "disc_judged", "disc_accepted",
                                          "train_total")},
            "human_rate": rate(r.get("human_rate")), "disc_rate": rate(r.get("disc_rate")),
            **{b: rate(r.get(b)) for b in BANDS},
            **{f"{b}_vs_base": _change(r.get(f"{b}_vs_base")) for b in BANDS},
            **{f"{b}_vs_prev": _change(r.get(f"{b}_vs_prev")) for b in BANDS},
            "auc": NA if r.get("auc") is None else f"{fmt(r['auc'], '3')} {_ci(r.get('auc_ci95'), '3')} "
                                                   f"(n={r.get('auc_n')})",
            "within_auc": NA if r.get("within_auc") is None else f"{fmt(r['within_auc'], '3')} ({r.get('within_pairs')} pairs)",
            "precision": (_nothing_accepted(r) or NA) if r.get("precision") is None else
            f"{fmt(r['precision'], '%')} {_ci(r.get('precision_ci95'))} (n={r.get('precision_n')})"}


COUNTS = [("round", "round", ""), ("human_judged", "judged by humans", ""), ("human_accepted", "accepted by humans", ""),
          ("disc_judged", "auto-judged", ""), ("disc_accepted", "auto-accepted", ""), ("train_total", "training set", ""),
          ("human_rate", "success (humans)", ""), ("disc_rate", "success (disc.)", ""),
          ("easy", "success (judge), easy", ""), ("hard", "success (judge), hard", "")]
CHANGES = [("round", "round", ""), ("hard_vs_base", "hard vs base (paired)", ""),
           ("easy_vs_base", "easy vs base (paired)", ""), ("hard_vs_prev", "hard vs previous", ""),
           ("easy_vs_prev", "easy vs previous", ""), ("auc", "disc. held-out ROC-AUC", ""),
           ("within_auc", "within-input AUC", ""), ("precision", "auto-acceptance precision", ""),
           ("human_rate", "human acceptance rate", "")]


def render(table: Mapping[str, Any]) -> str:
    """Markdown: Table-1 counts with success per band, then the changes / discriminator / precision table,
    the figures that did not improve, and the bars (when any row exists)."""
    rows = ([table["base"]] if table.get("base") else []) + list(table["rows"])
    cells = [_cells(r) for r in rows]
    out = [md_table(cells, COUNTS), "", md_table([c for c, r in zip(cells, rows) if r["round"] > 0], CHANGES), ""]
    out += ["Success (judge): the round's remover on the test split, judged by the judge (Wilson 95 %); changes: "
            "paired per test image, percentage points, 95 % interval. Base = the bootstrap's remover.", ""]
    if table.get("not_improved"):
        out += ["**Did not improve:**", "", *[f"- {s}" for s in table["not_improved"]], ""]
    if table.get("bars"):
        out += ["Bars of issue 13:", "", *[f"- {'met' if b['ok'] else 'MISSED'}: {b['bar']} — {b['seen']}"
                                           for b in table["bars"]], ""]
    return "\n".join(out)
