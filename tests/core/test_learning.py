"""Learning that must be real (tiny preset, CPU, fixed seeds), on the held-out test split with the
success criterion masked PSNR >= 20 dB per image."""

import pytest

from rorem_core.learning_check import run_check

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def check(tiny_workspace, tmp_path_factory):
    ws = tiny_workspace
    return run_check(ws.params, ws.model_dir, ws.data, tmp_path_factory.mktemp("learning"))


def test_base_remover_removes(check):
    m = check["base"]
    gain = m["remover"]["all"]["masked_psnr"] - m["leave_object"]["all"]["masked_psnr"]
    print("\n" + check["base_table"])
    assert gain >= 9.0, f"base remover gains only {gain:.2f} dB over leaving the object"
    assert m["remover"]["all"]["success_rate"] >= 0.80
    assert m["remover"]["all"]["unmasked_psnr"] >= 40, "the background outside the mask must be kept"


def test_round_finetune_lowers_loss_and_keeps_quality(check):
    p = check["paired"]
    print(f"\nround fine-tune: loss {check['loss_first_third']:.4f} -> {check['loss_last_third']:.4f}; "
          f"masked PSNR change {p['delta_db']:+.2f} +- {p['delta_db_sem']:.2f} dB; success change "
          f"{100 * p['delta_success']:+.1f} points\n" + check["after_table"])
    assert check["loss_last_third"] < check["loss_first_third"]
    assert p["delta_db"] > -2 * p["delta_db_sem"], "fine-tuning lowered masked PSNR beyond noise"
    n = check["after"]["all"]["n"]
    assert p["delta_success"] > -2 * (0.25 / n) ** 0.5, "fine-tuning lowered the success rate beyond noise"
