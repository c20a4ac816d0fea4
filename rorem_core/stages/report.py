"""Stage 14, report: the round report across all rounds so far (``rorem_core.evaluation.report``): Markdown with
a RORem Table-1-style table, discriminator agreement and calibration, DPO / RWD curves and the latest
sample grid, as ``<out>/report.md`` + PNGs + ``summary.json`` (the rows, for trackers and status)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from rorem_core.config import ReportConfig, load_params, parse_rounds
from rorem_core.evaluation.report import build_report
from rorem_core.stages import _cli


class ReportResult(BaseModel):
    report: str               # path of report.md
    rounds: list[int]
    table1: list[dict]


def run(cfg: ReportConfig, root: Path, out_dir: Path, rounds: list[int],
        sources: dict[int, str] | None = None) -> ReportResult:
    summary = build_report(root, out_dir, rounds, sources=sources, title=cfg.title, bins=cfg.calibration_bins)
    return ReportResult(report=str(out_dir / "report.md"), rounds=summary["rounds"], table1=summary["table1"])


def rounds_from_params(params: dict) -> tuple[list[int], dict[int, str]]:
    """Round numbers and their pool paths from the typed ``params["rounds"]``."""
    rounds = parse_rounds(params.get("rounds"))
    return sorted(rounds), {n: spec.pool for n, spec in rounds.items()}


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("report", __doc__)
    p.add_argument("--root", type=Path, default=Path("."), help="project root holding results/, data/, models/")
    p.add_argument("--out", type=Path, default=Path("reports"))
    p.add_argument("--rounds", type=int, nargs="*", help="rounds to include (default: params.yaml rounds)")
    args = p.parse_args(argv)

    def body(cfg):
        rounds, sources = rounds_from_params(load_params(args.params))
        res = run(cfg, args.root, args.out, args.rounds or rounds, sources)
        print(f"report: {res.report}")

    return _cli.run_main("report", args, body)


if __name__ == "__main__":
    raise SystemExit(main())
