"""The round report's HTML gallery (``reports/gallery.html``): pictures first, one row per input.

Two sections for the newest round N, both pure reads of files the stages wrote:

* **Pool inputs of round N** (data/candidates/round-N): source, mask and every candidate the round's
  SFT remover made, each with the human verdict (data/annotations/round-N/scored, when the input was
  sent to people) and the discriminator's score (data/auto/round-N/candidates.json, which scores every
  candidate, > threshold = accepted). An input is *accepted* / *rejected* by its humans' verdicts
  where there are some, else by the discriminator; *disagreement* = a candidate whose human verdict
  and discriminator decision differ (note: round N's discriminator was trained on most of round N's
  labels, so this is agreement on its training labels, not a held-out figure).
* **Test split** (results/evaluate*/round-N/gallery): source, mask, each model's result (SFT, DPO,
  LCM, any later evaluate_* stage), the GT when known, the oracle's masked PSNR and, when the
  evaluation recorded it (per_image.json ``judge_reason``), the judge's verdict: clean or its reason.

Filters (all / accepted / rejected / disagreement) are a few lines of inline JavaScript; images are
copied next to the page (``gallery/``) so it opens from disk with no server and no network.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any

from rorem_core.contract import RoundPaths

EVAL_MODELS = (("evaluate", "SFT"), ("evaluate_dpo", "DPO"), ("evaluate_lcm", "LCM 4-step"))
GOOD = 0.5   # a human score >= this is "good" (scored triplets hold 1 / 0)


def _json(p: Path) -> Any:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def pool_rows(root: Path, n: int) -> list[dict]:
    """One row per pool input: its candidates with human verdict and discriminator score."""
    rp = RoundPaths(n)
    cands = (_json(root / rp.candidates) or {}).get("candidates") or []
    human = {e["id"]: float(e["score"]) for e in _json(root / rp.annotations / "scored" / "meta.json") or []
             if "id" in e}
    auto = {c["id"]: c.get("score") for c in (_json(root / rp.auto / "candidates.json") or {}).get("candidates") or []}
    m = _json(root / rp.metrics("auto_score")) or {}
    if m.get("threshold") is not None:
        thr = m["threshold"]
    elif "threshold_rule" in m:     # min_precision found no threshold that precise: nothing was accepted
        thr = float("inf")
    else:                           # no auto_score metrics yet: the discriminator's own
        thr = 0.5
    rows: dict[str, dict] = {}
    base = root / rp.candidates_dir
    for c in cands:
        row = rows.setdefault(c["input_id"], {"id": c["input_id"], "source": base / c["source"],
                                              "mask": base / c["mask"], "results": []})
        h, d = human.get(c["id"]), auto.get(c["id"])
        row["results"].append({"id": c["id"], "label": f"SFT seed {c['seed']}", "image": base / c["result"],
                               "human": None if h is None else h >= GOOD, "disc": d,
                               "disc_ok": None if d is None else d > thr})
    for row in rows.values():
        rs = row["results"]
        verdicts = [r["human"] for r in rs if r["human"] is not None] or [r["disc_ok"] for r in rs
                                                                          if r["disc_ok"] is not None]
        row["accepted"] = any(verdicts) if verdicts else None
        row["disagree"] = any(r["human"] is not None and r["disc_ok"] is not None and r["human"] != r["disc_ok"]
                              for r in rs)
    return list(rows.values())


def test_rows(root: Path, n: int) -> list[dict]:
    """One row per test input in the evaluate stages' galleries: each model's result next to the GT."""
    rows: dict[str, dict] = {}
    later = tuple((p.name, p.name.removeprefix("evaluate_").upper()) for p in sorted((root / "results").glob("evaluate_*"))
                  if p.name not in {s for s, _ in EVAL_MODELS})    # any later model's evaluate_* stage
    for stage, label in EVAL_MODELS + later:
        d = root / RoundPaths(n).metrics(stage).rsplit("/", 1)[0] / "gallery"
        judged = {str(r["id"]): r for r in _json(d.parent / "per_image.json") or []
                  if isinstance(r, dict) and "id" in r and r.get("judge_good") is not None}
        for e in _json(d / "index.json") or []:
            row = rows.setdefault(e["id"], {"id": e["id"], "source": d / e["source"], "mask": d / e["mask"],
                                            "gt": d / e["GT"] if e.get("GT") else None, "results": []})
            psnr = e.get("masked_psnr")
            ok = e.get("success") if e.get("success") is not None else e.get("disc_success")   # GT, else disc.
            j = judged.get(str(e["id"])) or {}
            row["results"].append({"id": f"{stage}-{e['id']}", "label": label, "image": d / e["result"],
                                   "psnr": psnr, "success": ok, "disc": e.get("disc_score"),
                                   "judge": None if not j else (j.get("judge_reason") or "clean")})
    return list(rows.values())


def _img(src: Path, out: Path, copied: dict[Path, str]) -> str:
    if src not in copied:
        rel = f"gallery/{len(copied):05d}{src.suffix or '.png'}"
        shutil.copyfile(src, out / rel)
        copied[src] = rel
    return copied[src]


def _cell(rel: str, caption: str, cls: str = "") -> str:
    return (f'<figure class="{cls}"><img src="{html.escape(rel)}" loading="eager" alt="{html.escape(caption)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _judge_caption(reason: str | None) -> str:
    """The judge's verdict on a test result (evaluate's per_image ``judge_reason``), when recorded."""
    if reason is None:
        return ""
    cls = "good" if reason == "clean" else "bad"
    return f'<br><b class="{cls}">judge: {html.escape(reason)}</b>'


def _verdict(r: dict) -> str:
    h = {True: '<b class="good">human: good</b>', False: '<b class="bad">human: bad</b>', None: "human: not asked"}
    d = "disc.: n/a" if r["disc"] is None else f"disc.: {r['disc']:.2f} ({'accept' if r['disc_ok'] else 'reject'})"
    return f"{h[r['human']]}<br>{d}"


def render(root: Path, out: Path, n: int) -> Path | None:
    """Write ``out``/gallery.html and ``out``/gallery/ (the images); returns the page's path, or None
    (and no stale page left) when round n has neither candidates nor evaluated test images yet."""
    img_dir = out / "gallery"
    if img_dir.exists():
        shutil.rmtree(img_dir)
    pool, tests = pool_rows(root, n), test_rows(root, n)
    if not pool and not tests:
        (out / "gallery.html").unlink(missing_ok=True)
        return None
    img_dir.mkdir(parents=True)
    copied: dict[Path, str] = {}
    body = [f"<h1>Round {n} gallery</h1>",
            '<p class="filters">show: ' + " ".join(
                f'<button data-filter="{f}"{" class=on" if f == "all" else ""}>{f}</button>'
                for f in ("all", "accepted", "rejected", "disagreement")) + "</p>",
            '<p class="legend"><span class="good">&#9646;</span> accepted (by humans where asked, else by the '
            'discriminator; a test row by the GT oracle, else the discriminator) &nbsp; <span class="bad">&#9646;'
            '</span> rejected &nbsp; <span class="dis">&#9633;</span> humans and the discriminator disagree</p>']
    if pool:    # a section (heading + rows) is hidden by the filter when none of its rows is shown
        body.append(f"<section><h2>Pool of round {n}: candidates, human verdicts, discriminator scores</h2>")
    for row in pool:
        state = {True: "accepted", False: "rejected", None: "unjudged"}[row["accepted"]]
        cells = [_cell(_img(row["source"], out, copied), f"source {html.escape(row['id'])}"),
                 _cell(_img(row["mask"], out, copied), "mask")]
        cells += [_cell(_img(r["image"], out, copied), f"{r['label']}<br>{_verdict(r)}",
                        "disagree" if r["human"] is not None and r["disc_ok"] is not None
                        and r["human"] != r["disc_ok"] else "") for r in row["results"]]
        body.append(f'<div class="row" data-state="{state}" data-disagree="{int(row["disagree"])}">'
                    + "".join(cells) + "</div>")
    if pool:
        body.append("</section>")
    if tests:
        body.append(f"<section><h2>Test split: each model of round {n} (GT: masked PSNR vs GT; no GT: the discriminator's "
                    "score)</h2>")
    for row in tests:
        ok = [r["success"] for r in row["results"] if r["success"] is not None]
        state = "accepted" if ok and all(ok) else "rejected" if ok else "unjudged"
        cells = [_cell(_img(row["source"], out, copied), f"source {html.escape(row['id'])}"),
                 _cell(_img(row["mask"], out, copied), "mask")]
        cells += [_cell(_img(r["image"], out, copied),
                        f"{r['label']}<br>" + (f"GT: {r['psnr']:.1f} dB" if r["psnr"] is not None else
                                               f"no GT; disc.: {r['disc']:.2f}" if r.get("disc") is not None else "")
                        + _judge_caption(r.get("judge")))
                  for r in row["results"]]
        if row["gt"]:
            cells.append(_cell(_img(row["gt"], out, copied), "GT"))
        body.append(f'<div class="row test" data-state="{state}" data-disagree="0">' + "".join(cells) + "</div>")
    if tests:
        body.append("</section>")
    page = out / "gallery.html"
    page.write_text(PAGE.replace("{title}", f"rorem-loop round {n}").replace("{body}", "\n".join(body)))
    return page


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title><style>
body{font-family:sans-serif;margin:1em;background:#fafafa}
.row{display:flex;flex-wrap:wrap;gap:6px;padding:6px;margin:4px 0;background:#fff;border:1px solid #ddd}
.row[data-state=accepted]{border-left:6px solid #2a2}.row[data-state=rejected]{border-left:6px solid #c33}
figure{margin:0;width:150px;font-size:11px}figure img{width:150px;height:auto;image-rendering:pixelated;display:block}
figure.disagree{outline:3px solid orange}.good{color:#2a2}.bad{color:#c33}.dis{color:orange;font-weight:bold}
.legend{font-size:12px;color:#444}
button{margin-right:4px}button.on{font-weight:bold;background:#333;color:#fff}
</style></head><body>
{body}
<script>
function show(f){
  document.querySelectorAll('button[data-filter]').forEach(b=>b.classList.toggle('on', b.dataset.filter===f));
  document.querySelectorAll('.row').forEach(r=>{
    const ok = f==='all' || (f==='disagreement' ? r.dataset.disagree==='1' : r.dataset.state===f);
    r.style.display = ok ? '' : 'none';});
  document.querySelectorAll('section').forEach(s=>{
    s.style.display = Array.from(s.querySelectorAll('.row')).some(r=>r.style.display!=='none') ? '' : 'none';});
}
document.querySelectorAll('button[data-filter]').forEach(b=>b.addEventListener('click',()=>show(b.dataset.filter)));
</script></body></html>
"""

__all__ = ["pool_rows", "render", "test_rows"]
