"""train_rl.seed_inputs: a few seed-split triplets join the rollout inputs. They are chosen from the base
seed alone, carry ids no pool input has, never enter the held-out guard, are rolled out K times with
their own group baseline, are scored by the oracle against the seed split's GT, and bad settings are
refused before any rollout (32 px random remover, seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rorem_core.config import ConfigError, stage_config
from rorem_core.data.formats import read_pool, read_triplets
from rorem_core.rl.rollout import SEED_PREFIX, Inputs, pick_seed_triplets, with_seed_inputs
from rorem_core.stages import train_rl
from tests.rl.test_train_rl import _params

POOL = Path("pools") / "round-1"
HIDDEN = Path("hidden") / "round-1"


def test_seed_inputs_are_chosen_from_the_base_seed_with_ids_no_pool_input_has(rl_data, rl_seed):
    meta, ids, ts = pick_seed_triplets(rl_seed, 3, base_seed=0)
    assert (meta, ids, ts) == pick_seed_triplets(rl_seed, 3, base_seed=0)       # a resumed run / dvc repro
    all_ts = read_triplets(meta)
    assert ids == [SEED_PREFIX + t.id for t in ts] and all(t in all_ts for t in ts) and len(set(ids)) == 3
    assert not set(ids) & {it.id for it in read_pool(rl_data / POOL / "meta.json")}
    picks = {tuple(pick_seed_triplets(rl_seed, 3, base_seed=s)[1]) for s in range(5)}
    assert len(picks) > 1, "the choice must follow base.seed"
    assert pick_seed_triplets(None, 0, base_seed=0) == (None, [], [])           # the default: the pool only


def _inputs(ids: list[str]) -> Inputs:
    n = len(ids)
    return Inputs(ids, torch.zeros(n, 3, 8, 8), torch.ones(n, 1, 8, 8), torch.ones(n, 1, 1, 1), torch.zeros(n, 4, 1, 1))


def test_seed_inputs_join_the_rollout_rows_and_never_the_held_out_rows():
    from rorem_core.rl.rollout import split_heldout

    pool = _inputs([f"r1-p{i:04d}" for i in range(10)])
    roll, held = split_heldout(pool.ids, 0.3, 0, None)
    both, roll2 = with_seed_inputs(pool, roll, _inputs(["seed:a", "seed:b"]))
    assert both.ids[:10] == pool.ids and both.ids[10:] == ["seed:a", "seed:b"]
    assert roll2 == roll + [10, 11]
    assert held and not any(both.ids[i].startswith(SEED_PREFIX) for i in held)
    assert with_seed_inputs(pool, roll, None) == (pool, roll)
    with pytest.raises(ValueError, match=r"ids \['seed:a'\] occur twice.*rename"):
        with_seed_inputs(_inputs(["seed:a", "x"]), [0, 1], _inputs(["seed:a"]))


def _hand_seed_split(root: Path) -> Path:
    """Two triplets at 32 px with constant GT 102/255 and 51/255, the left half masked."""
    from rorem_core.data.images import save_png

    mask = np.zeros((32, 32), bool)
    mask[:, :16] = True
    rows = []
    for name, v in (("a", 102), ("b", 51)):
        save_png(root / "GT" / f"{name}.png", np.full((32, 32, 3), v / 255.0))
        save_png(root / "source" / f"{name}.png", np.zeros((32, 32, 3)))
        save_png(root / "mask" / f"{name}.png", mask)
        rows.append({"id": name, "source": f"source/{name}.png", "mask": f"mask/{name}.png", "GT": f"GT/{name}.png"})
    (root / "meta.json").write_text(json.dumps(rows))
    return root


def test_the_oracle_scores_a_seed_input_against_the_seed_split_gt(rl_model, rl_data, tmp_path):
    """Off by 0.1 (peak 1) inside the mask: MSE 0.01, 20 dB; off by 0.01: 40 dB. A pool input in the same
    batch is still scored against the pool's hidden GT."""
    from rorem_core.data.formats import read_hidden_gt
    from rorem_core.data.images import load_rgb
    from rorem_core.data.latents import image_to_tensor
    from rorem_core.evaluation.metrics import masked_psnr
    from rorem_core.models.loading import load_vae
    from rorem_core.rl.rewards import load_reward, to_unit
    from rorem_core.rl.rollout import load_triplet_inputs

    meta, ids, ts = pick_seed_triplets(_hand_seed_split(tmp_path / "seed"), 2, base_seed=0)
    assert ids == ["seed:a", "seed:b"]
    seed_in = load_triplet_inputs(meta, ids, ts, load_vae(rl_model), 32)
    reward = load_reward("oracle", hidden=rl_data / HIDDEN, resolution=32, success_db=20.0,
                         seed_gt=dict(zip(ids, seed_in.gt)))
    pool_id = sorted(read_hidden_gt(rl_data / HIDDEN))[0]
    unit = torch.tensor([102 / 255 + 0.1, 51 / 255 + 0.01, 0.5])
    results = (unit.view(3, 1, 1, 1) * 2 - 1).expand(3, 3, 32, 32).contiguous()
    masks = torch.cat([seed_in.mask, seed_in.mask[:1]])
    got = reward(results, torch.zeros_like(results), masks, [*ids, pool_id])
    gt = image_to_tensor(load_rgb(read_hidden_gt(rl_data / HIDDEN)[pool_id]), 32)
    want_pool = masked_psnr(to_unit(results[2]), to_unit(gt), masks[2, 0].numpy() > 0.5)
    assert got.tolist() == pytest.approx([20.0, 40.0, want_pool], abs=1e-3)
    with pytest.raises(ValueError, match=r"no GT for inputs \['seed:zz'\].*--seed"):
        reward(results[:1], results[:1], masks[:1], ["seed:zz"])


def test_rollouts_hold_k_samples_of_each_seed_input_with_its_own_group_baseline(rl_model, rl_data, rl_seed, tmp_path):
    """All 12 rollout inputs (9 pool + 3 seed) in one rollout, K = 3: every seed input has 3 rows, and each
    group's advantages are its rewards z-scored over its own 3 samples; the guard's rows are pool inputs."""
    from rorem_core.models.loading import load_vae
    from rorem_core.rl.ddpo import OnlineRL
    from rorem_core.rl.rewards import load_reward
    from rorem_core.rl.rollout import load_triplet_inputs
    from tests.rl.test_train_rl import _loop

    pool_rl, unet = _loop(tmp_path, rl_model, rl_data, inputs_per_epoch=12, num_samples=3)   # the stage's pieces
    meta, ids, ts = pick_seed_triplets(rl_seed, 3, base_seed=0)
    seed_in = load_triplet_inputs(meta, ids, ts, load_vae(rl_model), 32)
    inputs, roll = with_seed_inputs(pool_rl.inputs, pool_rl.rollout_rows, seed_in)
    reward = load_reward("oracle", hidden=rl_data / HIDDEN, resolution=32, success_db=20.0,
                         seed_gt=dict(zip(ids, seed_in.gt)))
    rl = OnlineRL(pool_rl.cfg, unet, pool_rl.smp, inputs, roll, pool_rl.heldout_rows, reward, tmp_path / "work")
    rl.before_batch(0)
    idx, r, adv = rl.rollout["input_index"], rl.rollout["rewards"], rl.rollout["advantages"]
    seed_rows = [rl.inputs.ids.index(i) for i in ids]
    assert rl.g == 12 and all(int((idx == s).sum()) == 3 for s in seed_rows)
    for s in seed_rows:
        rs = r[idx == s].double()
        assert torch.isfinite(rs).all() and float(rs.std()) > 0
        z = ((rs - rs.mean()) / (rs.std(unbiased=False) + 1e-6)).clamp(-5, 5)
        torch.testing.assert_close(adv[idx == s].double(), z, atol=1e-5, rtol=0)
    assert len(rl.heldout(0)) == 3 and not any(rl.inputs.ids[i].startswith(SEED_PREFIX) for i in rl.heldout_rows)


def test_the_stage_rolls_out_seed_inputs_given_by_seed(rl_model, rl_data, rl_seed, tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(_params(tmp_path, steps=2, seed_inputs=2)))
    argv = ["--params", str(p), "--init", str(rl_model), "--pool", str(rl_data / POOL), "--hidden",
            str(rl_data / HIDDEN), "--seed", str(rl_seed), "--out", str(tmp_path / "out"),
            "--metrics", str(tmp_path / "m.json")]
    assert train_rl.main(argv) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert (m["n_seed_inputs"], m["n_rollout_inputs"], m["n_heldout"], m["steps"]) == (2, 11, 3, 2)
    assert m["heldout_reward"]["n"] == 3        # the guard: pool inputs only


def test_negative_seed_inputs_is_refused_naming_the_parameter(tmp_path):
    with pytest.raises(ConfigError, match=r"train_rl.seed_inputs: Input should be greater than or equal to 0 "
                                          r"\(got -1\)"):
        stage_config("train_rl", _params(tmp_path, seed_inputs=-1))


@pytest.mark.parametrize("n, seed, match", [
    (2, None, r"train_rl.seed_inputs=2 but no seed split was given; pass --seed data/seed.*seed_inputs: 0"),
    (6, "rl_seed", r"train_rl.seed_inputs=6 but the seed split .*seed/meta.json has 5 triplets; set "
                   r"train_rl.seed_inputs to at most 5"),
])
def test_seed_inputs_without_a_big_enough_seed_split_are_refused_before_any_rollout(
        rl_model, rl_data, tmp_path, monkeypatch, request, n, seed, match):
    from rorem_core.rl import ddpo

    monkeypatch.setattr(ddpo, "collect_rollout", lambda *a, **k: pytest.fail("a rollout ran"))
    cfg = stage_config("train_rl", _params(tmp_path, seed_inputs=n))
    with pytest.raises(ValueError, match=match):
        train_rl.run(cfg, rl_model, rl_data / POOL, tmp_path / "out", hidden=rl_data / HIDDEN,
                     seed=request.getfixturevalue(seed) if seed else None)
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_a_seed_split_repeating_an_id_is_refused(tmp_path):
    root = _hand_seed_split(tmp_path / "seed")
    rows = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps([{**r, "id": "a"} for r in rows]))
    with pytest.raises(ValueError, match=r"seed split .*meta.json repeats the ids \['seed:a'\]; give every triplet"):
        pick_seed_triplets(root, 2, base_seed=0)
