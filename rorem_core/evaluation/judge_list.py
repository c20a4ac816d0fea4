"""``rorem judge LIST.json``: judge a list of removals, one JSON object per item on stdout.

LIST.json is a JSON list of ``{"source", "mask", "result", "GT"}`` (an optional ``"item"`` names the
entry), paths relative to the file. Each judged entry prints ``{"item", "good", "reason", "score"}``
(see :mod:`rorem_core.evaluation.judge`). A bad entry (a missing or unreadable file, a mask of another
size, an empty mask) prints one message naming the entry on stderr, and the others are still judged;
the exit status is then 1. A missing or malformed LIST.json exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rorem_core.data.formats import FormatError, read_json_list, resolve_in_root
from rorem_core.data.images import ImageError, load_mask, load_rgb
from rorem_core.evaluation.judge import judge

KEYS = ("source", "mask", "result", "GT")


class JudgeInputError(ValueError):
    """One entry of the list cannot be judged; the message names the entry and the fix."""


def _name(index: int, row) -> str:
    label = row.get("item") if isinstance(row, dict) else None
    return f"item {index}" + (f" ({label})" if label is not None else "")


def read_list(path: Path) -> list:
    return read_json_list(path, "{source, mask, result, GT}", "give a JSON list of {source, mask, result, GT}")


def judge_entry(path: Path, index: int, row) -> dict:
    """Judge entry ``index`` of the list at ``path``; raises JudgeInputError naming it."""
    where = f"{path}: {_name(index, row)}"
    if not isinstance(row, dict) or any(not isinstance(row.get(k), str) for k in KEYS):
        raise JudgeInputError(f"{where}: needs string paths for {', '.join(KEYS)}")
    try:
        files = {k: resolve_in_root(path.parent, row[k], where=where) for k in KEYS}
        for k, f in files.items():
            if not f.is_file():
                raise JudgeInputError(f"{where}: {k} file {row[k]!r} not found (looked at {f})")
        src, res, gt = (load_rgb(files[k]) for k in ("source", "result", "GT"))
        mask = load_mask(files["mask"])
        _check(where, src, mask, res, gt)
        v = judge(src, mask, res, gt)
    except (FormatError, ImageError) as e:
        raise JudgeInputError(f"{where}: {e}") from e
    return {"item": row.get("item", index), "good": v.good, "reason": v.reason, "score": round(v.score, 4)}


def _check(where: str, src, mask, res, gt) -> None:
    for k, a in (("result", res), ("GT", gt)):
        if a.shape != src.shape:
            raise JudgeInputError(f"{where}: {k} is {a.shape[1]}x{a.shape[0]} px but source is "
                                  f"{src.shape[1]}x{src.shape[0]} px; give images of one size")
    if mask.shape != src.shape[:2]:
        raise JudgeInputError(f"{where}: mask is {mask.shape[1]}x{mask.shape[0]} px but the images are "
                              f"{src.shape[1]}x{src.shape[0]} px; give a mask of the image's size")
    if not mask.any():
        raise JudgeInputError(f"{where}: the mask is empty (no pixel to remove); give the object's mask")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rorem judge", description=__doc__.splitlines()[0])
    p.add_argument("list", type=Path, help="JSON list of {source, mask, result, GT}, paths relative to it")
    args = p.parse_args(argv)
    try:
        rows = read_list(args.list)
    except FormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = 0
    for i, row in enumerate(rows):
        try:
            print(json.dumps(judge_entry(args.list, i, row)), flush=True)
        except JudgeInputError as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
