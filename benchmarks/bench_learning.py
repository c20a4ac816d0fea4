"""Foundation learning figures on the held-out test split (tiny preset, CPU): the shipped base
remover and one default round of fine-tuning, next to leave-the-object, ring-mean fill, OpenCV
Telea and the autoencoder ceiling.

  python benchmarks/bench_learning.py [--workdir DIR]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:   # run as a script: the repo root for `tests.helpers`
    sys.path.insert(0, str(REPO))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workdir", type=Path, default=None)
    a = p.parse_args()
    from rorem_core.config import stage_config
    from rorem_core.stages import bootstrap
    from tests.helpers.learning_check import run_check

    root = a.workdir or Path(tempfile.mkdtemp(prefix="bench-learning-"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["base"].update(wandb_mode="disabled", cache_dir=str(root / "cache"), work_dir=str(root / "work"))
    t0 = time.time()
    boot = bootstrap.run(stage_config("bootstrap", params), root / "models/base", root / "data")
    r = run_check(params, root / "models/base", root / "data", root)
    print(f"autoencoder held-out reconstruction PSNR: {boot.ae_psnr_db:.2f} dB")
    print("base remover (shipped) on the test split:\n" + r["base_table"])
    print(f"\none default round of fine-tuning ({r['train']['steps']} steps on {r['train']['n_train']} seed triplets): "
          f"training-set loss (fixed t, noise) {r['loss_before']:.5f} -> {r['loss_after']:.5f}")
    print(r["after_table"].splitlines()[0] + "\n" + r["after_table"].splitlines()[1])
    pd = r["paired"]
    print(f"paired change: masked PSNR {pd['delta_db']:+.2f} +- {pd['delta_db_sem']:.2f} dB, success "
          f"{100 * pd['delta_success']:+.1f} points")
    for band in ("band_easy", "band_hard"):
        b, af = r["base"]["remover"][band], r["after"][band]
        print(f"{band}: base {b['masked_psnr']:.2f} dB / {100 * b['success_rate']:.1f}%  ->  round-1 "
              f"{af['masked_psnr']:.2f} dB / {100 * af['success_rate']:.1f}%")
    print(f"total {time.time() - t0:.0f} s")
    (root / "bench_learning.json").write_text(json.dumps(r, indent=2, default=str))


if __name__ == "__main__":
    main()
