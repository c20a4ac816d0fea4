"""The SDXL preset rehearsed end to end on CPU: one whole round (`rorem round --annotators simulated`)
with params.sdxl-rehearsal.yaml on the full-size SDXL-inpainting stand-in (real architecture, random
weights), in a scratch copy of this project (git + DVC), simulated annotators through the real Label
Studio. Prints wall time and peak RSS per stage and writes them to a JSON file (docs/sdxl.md).

  python benchmarks/bench_sdxl_rehearsal.py [--workdir DIR] [--standin .rorem/sdxl-standin] [--out FILE]

Builds the stand-in first when it is missing (scripts/build_sdxl_standin.py, ~2 min, ~10 GiB).
Needs ~17 GiB free memory (train_rl: a full-size UNet + the discriminator's encoder, fp32) and ~8 GB of
disk (checked first; the round measured 3.9 GB: workspace + DVC cache + local remote). How the figures
are taken: tests/helpers/sdxl_round.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# before LoRA stacks: workspace, DVC cache and the local remote each held two fused 10.3 GB UNets
# (~65 GB); with stacks every LoRA stage stores only its adapter: 3 x 1.3 GB measured (docs/sdxl.md)
NEED_GB = 8


def main() -> None:
    from tests.helpers.sdxl_round import format_rows, measured_round, scratch_project

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--standin", type=Path, default=REPO / ".rorem" / "sdxl-standin")
    ap.add_argument("--out", type=Path, help="JSON of the figures (default WORKDIR/bench_sdxl_rehearsal.json)")
    a = ap.parse_args()
    os.environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    t0 = time.perf_counter()
    if not (a.standin / "standin.json").is_file():
        subprocess.run([sys.executable, str(REPO / "scripts" / "build_sdxl_standin.py"), "--out", str(a.standin)],
                       check=True, cwd=REPO)
    build_s = time.perf_counter() - t0
    base = a.workdir or Path(tempfile.mkdtemp(prefix="bench-sdxl-"))
    root = base / "proj"
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(base).free / 1e9
    if free < NEED_GB:
        raise SystemExit(f"{base}: {free:.0f} GB free, the round needs ~{NEED_GB} GB (docs/sdxl.md: the "
                         "workspace, DVC's cache and the remote); pass --workdir on a bigger disk")
    params = yaml.safe_load((REPO / "params.sdxl-rehearsal.yaml").read_text())
    params["base"]["wandb_mode"] = "disabled"
    scratch_project(root, params, {params["bootstrap"]["sdxl_pretrained"]: a.standin})
    res = measured_round(root, base)
    print(f"\nSDXL rehearsal, one round ({os.cpu_count()} CPU cores, 1 torch thread, "
          f"{params['base']['resolution']} px, fp32, random weights)")
    print(format_rows(res))
    if res["gate_s"] is not None:
        print(f"human gate (simulated, Label Studio) {res['gate_s']:.1f} s; versioning {res['versioning_s']:.1f} s")
    print(f"round wall time {res['round_wall_s']:.1f} s (stand-in build {build_s:.1f} s); report: {res['report']}")
    print("disk after the round, GB: " + ", ".join(f"{k} {v:.2f}" for k, v in res["disk_gb"].items()))
    out = a.out or base / "bench_sdxl_rehearsal.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**res, "standin_build_s": round(build_s, 1), "project": str(root),
                               "bench_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)},
                              indent=2))
    print(f"figures: {out}")
    if res["error"]:
        print(f"the round FAILED: {res['error']}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
