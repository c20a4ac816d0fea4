"""Pull a round: frozen full exports, then scored triplets, human preference pairs and a summary.

Output folder (``data/annotations/round-N/``)::

    review_export.json, pairwise_export.json   frozen snapshots (normalised: sorted, no clock fields)
    review_export.2.json, ...                  a later pull whose content differs gets a new version;
                                               no snapshot file is ever rewritten (they are read-only)
    scored/meta.json + scored/{source,mask,GT}/   RORem scored triplets (score 1 good / 0 bad)
    pairs/meta.json + pairs/{source,mask,results}/ human preference pairs
    summary.json                               counts, agreement, ties, problems, snapshot names, and
                                               ``quality``: review mode, gold, per-annotator quality
    push.json                                  (written by the push) mode, verdicts, gold answers

Gold tasks (their candidate ids are the keys of push.json's gold tasks) are converted apart: they
measure the annotators (:mod:`annotation.quality`) and never become scored triplets. Flagged
annotators' votes are excluded or down-weighted (``annotation.gold.flagged_votes``) before the labels.

Before anything is fetched, the snapshots already in the folder are verified against the sha256
that ``summary.json`` records (and every version must parse as a JSON list): a truncated or edited
snapshot raises :class:`SnapshotCorrupt` naming the file and how to restore it, instead of being
compared, skipped or converted. :func:`load_snapshot` reads a snapshot with the same checks.

Images are placed next to each meta.json (hard links where the file system allows, else copies) so
every path is relative and inside its folder (RORem's rule; a DVC ``add`` of the round folder then
freezes everything; nothing modifies an image in place, so a link is as safe as a copy). Both exports are fetched before
anything is written, so a server failure mid-pull leaves earlier files untouched. Converted outputs
derive from the newest snapshot only and are deterministic: pulling twice gives identical files.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from annotation.client import LabelStudioClient, LabelStudioError
from annotation.config import AnnotationConfig
from annotation.convert import GOOD, Conversion, convert, normalize_export, parse_pairwise, parse_review
from annotation.paths import RealPaths, unique_names
from annotation.push import read_setup
from annotation.quality import lead_times, round_quality
from rorem_core.data.formats import Candidate, Pair, Triplet, read_candidates
from rorem_core.io import atomic_dir, link_or_copy, sha256_file, write_bytes_atomic


class SnapshotCorrupt(ValueError):
    """A frozen export no longer matches what was pulled; the message names the file and the fix."""


def _restore_hint(out_dir: Path) -> str:
    return (f"it holds human labels and is never rewritten: restore it with `dvc checkout {out_dir}` "
            "(or `dvc pull` on a clone), then pull again")


def verify_snapshots(out_dir: Path) -> dict[str, Path]:
    """Check the frozen exports of ``out_dir``; returns kind -> snapshot named by summary.json.

    Raises:
        SnapshotCorrupt: a snapshot (or summary.json) is unreadable, not a JSON list, or its
            sha256 differs from the one summary.json recorded when it was written.
    """
    out_dir = Path(out_dir)
    for snap in sorted(out_dir.glob("*_export*.json")):
        try:
            ok = isinstance(json.loads(snap.read_bytes()), list)
        except (OSError, ValueError) as e:
            raise SnapshotCorrupt(f"{snap}: frozen Label Studio export is unreadable ({e}); "
                                  f"{_restore_hint(out_dir)}") from None
        if not ok:
            raise SnapshotCorrupt(f"{snap}: frozen Label Studio export is not a JSON list of tasks; "
                                  f"{_restore_hint(out_dir)}")
    summary_path = out_dir / "summary.json"
    if not summary_path.is_file():
        return {}
    try:
        named = json.loads(summary_path.read_bytes())["snapshots"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SnapshotCorrupt(f"{summary_path}: unreadable ({type(e).__name__}: {e}); "
                              f"{_restore_hint(out_dir)}") from None
    out = {}
    for kind, rec in sorted(named.items()):
        snap = out_dir / rec["file"]
        if not snap.is_file():
            raise SnapshotCorrupt(f"{snap}: frozen Label Studio export named by {summary_path} is missing; "
                                  f"{_restore_hint(out_dir)}")
        if (digest := sha256_file(snap)) != rec["sha256"]:
            raise SnapshotCorrupt(f"{snap}: frozen Label Studio export fails its checksum (sha256 {digest[:12]}..., "
                                  f"{summary_path.name} records {rec['sha256'][:12]}...): truncated or edited; "
                                  f"{_restore_hint(out_dir)}")
        out[kind] = snap
    return out


def load_snapshot(out_dir: Path, kind: str) -> list[dict]:
    """The verified tasks of the ``kind`` ("review" / "pairwise") snapshot that summary.json names."""
    snaps = verify_snapshots(out_dir)
    if kind not in snaps:
        raise SnapshotCorrupt(f"{Path(out_dir) / 'summary.json'}: names no {kind} snapshot; pull the round first")
    return json.loads(snaps[kind].read_bytes())


@dataclass
class PullResult:
    out_dir: Path
    snapshots: dict[str, str]     # kind -> snapshot file name used
    new_snapshots: list[str]      # files written by this pull
    scored: int
    pairs: int
    summary: dict


def _dumps(obj: object) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def freeze_snapshot(out_dir: Path, stem: str, tasks: list[dict]) -> tuple[str, bool]:
    """Write ``tasks`` as the next version of ``<stem>.json`` unless the newest version is identical.

    Returns (file name, written?). Versions: ``stem.json``, ``stem.2.json``, ``stem.3.json``...
    """
    data = _dumps(tasks)
    pat = re.compile(rf"^{re.escape(stem)}(?:\.(\d+))?\.json$")
    versions = sorted((int(m.group(1) or 1), p.name) for p in out_dir.glob(f"{stem}*.json")
                      if (m := pat.match(p.name)))
    if versions and (out_dir / versions[-1][1]).read_bytes() == data:
        return versions[-1][1], False
    n = versions[-1][0] + 1 if versions else 1
    name = f"{stem}.json" if n == 1 else f"{stem}.{n}.json"
    write_bytes_atomic(out_dir / name, data)
    os.chmod(out_dir / name, 0o444)  # frozen: humans made it, it cannot be regenerated
    return name, True


def _fetch(client: LabelStudioClient, cfg: AnnotationConfig, round_id: int, kind: str) -> list[dict] | None:
    proj = client.find_project(cfg.project_title(round_id, kind))
    if proj is None:
        return None
    return normalize_export(client.export_snapshot(proj["id"], f"rorem round {round_id} {kind}"))


def _write_dataset(folder: Path, entries: list[dict], files: dict[str, Path]) -> bool:
    """Replace ``folder`` with meta.json + copied images, unless it already holds exactly that."""
    meta = _dumps(entries)
    if (folder / "meta.json").is_file() and (folder / "meta.json").read_bytes() == meta and all(
            (folder / rel).is_file() and (folder / rel).stat().st_size == src.stat().st_size
            for rel, src in files.items()):
        return False
    with atomic_dir(folder) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; these are shared datasets
        for rel, src in files.items():   # hard links where possible: 20,000 copies took ~5 s here
            link_or_copy(src, tmp / rel)
        (tmp / "meta.json").write_bytes(meta)
    return True


def _names(cands: dict[str, Candidate], base: Path) -> dict[str, dict[str, str]]:
    """File stems per candidate: inputs share their source/mask file, results are per candidate."""
    order = sorted(cands.values(), key=lambda c: c.id)
    real = RealPaths()   # 10,000 candidates: each folder resolved once, not 40,000 full resolves
    src = {c.id: real(base / c.source) for c in order}
    msk = {c.id: real(base / c.mask) for c in order}
    src_names = unique_names([(c.input_id, src[c.id]) for c in order])
    msk_names = unique_names([(c.input_id, msk[c.id]) for c in order])
    res = unique_names([(c.id, c.id) for c in order])
    return {c.id: {"source": src_names[src[c.id]], "mask": msk_names[msk[c.id]], "result": res[c.id]}
            for c in order}


def scored_entries(conv: Conversion, cands: dict[str, Candidate], base: Path) -> tuple[list[dict], dict]:
    """RORem scored triplets (GT = the judged result) and the files to copy, by relative path."""
    names, entries, files = _names(cands, base), [], {}
    for cid, out in sorted(conv.outcomes.items()):
        if out.label is None:
            continue
        c, n = cands[cid], names[cid]
        rel = {"source": f"source/{n['source']}.png", "mask": f"mask/{n['mask']}.png", "GT": f"GT/{n['result']}.png"}
        files.update({rel["source"]: base / c.source, rel["mask"]: base / c.mask, rel["GT"]: base / c.result})
        t = Triplet(**rel, score=1.0 if out.label == GOOD else 0.0, id=cid, input_id=c.input_id, round=c.round,
                    votes=dict(sorted(out.votes.items())), reasons=dict(sorted(out.reasons.items())))
        entries.append(t.model_dump(exclude_none=True))
    return entries, files


def pair_entries(conv: Conversion, tasks: list[dict], cands: dict[str, Candidate], base: Path) -> tuple[list[dict], dict]:
    """Human preference pairs (majority side preferred) and the files to copy."""
    names, entries, files = _names(cands, base), [], {}
    sides = {t["data"]["pair_id"]: t["data"] for t in tasks if (t.get("data") or {}).get("pair_id") in conv.outcomes}
    for pid, out in sorted(conv.outcomes.items()):
        if out.label is None:
            continue
        d = sides[pid]
        win, lose = (d["candidate_left"], d["candidate_right"])[:: 1 if out.label == "left" else -1]
        c, n = cands[win], names[win]
        rel = {"source": f"source/{n['source']}.png", "mask": f"mask/{n['mask']}.png",
               "preferred": f"results/{n['result']}.png", "rejected": f"results/{names[lose]['result']}.png"}
        files.update({rel["source"]: base / c.source, rel["mask"]: base / c.mask,
                      rel["preferred"]: base / c.result, rel["rejected"]: base / cands[lose].result})
        p = Pair(**rel, id=pid, input_id=c.input_id, round=c.round, preferred_id=win, rejected_id=lose,
                 votes=dict(sorted(out.votes.items())))
        entries.append(p.model_dump(exclude_none=True))
    return entries, files


def _known_pairs(tasks: list[dict], cands: dict[str, Candidate]) -> set[str]:
    return {d["pair_id"] for t in tasks if (d := t.get("data") or {}).get("pair_id")
            and d.get("candidate_left") in cands and d.get("candidate_right") in cands}


def pull_round(client: LabelStudioClient, cfg: AnnotationConfig, round_id: int, candidates_path: Path,
               out_dir: Path) -> PullResult:
    """Freeze both exports, convert them, write the outputs; see the module docstring for the layout."""
    candidates_path, out_dir = Path(candidates_path), Path(out_dir)
    cands = {c.id: c for c in read_candidates(candidates_path)}
    base = candidates_path.parent
    verify_snapshots(out_dir)  # a damaged frozen export is refused before anything is fetched or written
    review = _fetch(client, cfg, round_id, "review")
    if review is None:
        raise LabelStudioError(f"no project {cfg.project_title(round_id, 'review')!r} on {client.url}; "
                               "push the round first")
    pairwise = _fetch(client, cfg, round_id, "pairwise") if cfg.pairwise else None
    # everything fetched: from here on only local writes
    out_dir.mkdir(parents=True, exist_ok=True)
    snaps, new = {}, []
    for kind, tasks in (("review", review), ("pairwise", pairwise)):
        if tasks is not None:
            snaps[kind], written = freeze_snapshot(out_dir, f"{kind}_export", tasks)
            new += [snaps[kind]] if written else []
    setup = read_setup(out_dir / "push.json") or {}
    gold_info = setup.get("gold") or None
    answers = {k: g["answer"] for k, g in ((gold_info or {}).get("tasks") or {}).items()}
    gold_tasks = [t for t in review if (t.get("data") or {}).get("candidate_id") in answers]
    real_tasks = [t for t in review if (t.get("data") or {}).get("candidate_id") not in answers]
    rconv = convert(real_tasks, project="review", key_field="candidate_id", known=set(cands),
                    parse=parse_review, min_labels=cfg.min_labels)
    gconv = convert(gold_tasks, project="review-gold", key_field="candidate_id", known=set(answers),
                    parse=parse_review, min_labels=1) if answers else None
    quality = round_quality(rconv, gconv, answers, lead_times(review), cfg.gold, cfg.min_labels,
                            mode=setup.get("mode", "unknown (no push.json)"), gold_info=gold_info,
                            predictions=setup.get("predictions") or {})
    scored, sfiles = scored_entries(rconv, cands, base)   # real tasks only: gold answers are never new labels
    _write_dataset(out_dir / "scored", scored, sfiles)
    summary = {"round": round_id, "snapshots": {k: {"file": v, "sha256": sha256_file(out_dir / v)}
                                                for k, v in sorted(snaps.items())},
               "min_labels": cfg.min_labels, "review": rconv.summary(), "scored_triplets": len(scored),
               "quality": quality}
    pairs: list[dict] = []
    if pairwise is not None:
        pconv = convert(pairwise, project="pairwise", key_field="pair_id", known=_known_pairs(pairwise, cands),
                        parse=parse_pairwise, min_labels=cfg.min_labels)
        pairs, pfiles = pair_entries(pconv, pairwise, cands, base)
        _write_dataset(out_dir / "pairs", pairs, pfiles)
        summary.update(pairwise=pconv.summary(), preference_pairs=len(pairs))
    else:   # pairwise off: an empty pairs set, so every round has the same layout for build_pairs
        _write_dataset(out_dir / "pairs", [], {})
        summary.update(preference_pairs=0)
    if not (out_dir / "summary.json").is_file() or (out_dir / "summary.json").read_bytes() != _dumps(summary):
        write_bytes_atomic(out_dir / "summary.json", _dumps(summary))
        os.chmod(out_dir / "summary.json", 0o644)
    return PullResult(out_dir, snaps, new, len(scored), len(pairs), summary)
