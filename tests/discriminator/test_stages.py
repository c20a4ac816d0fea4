"""Smoke tests of the three stages on a small synthetic round (Telea / leave-the-object candidates,
oracle labels) and a random tiny model: each ``run()`` writes its declared outputs, ``main()`` parses
its argv, training resumes from its checkpoint, and the outputs resolve inside their folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from rorem_core.config import AutoScoreConfig, SelectConfig, TrainDiscriminatorConfig
from rorem_core.data.formats import read_candidates, read_triplets, resolve_in_root
from rorem_core.reward.discriminator import INFO_FILE, read_info
from rorem_core.stages import auto_score, select, train_discriminator
from tests.helpers.oracle_labels import build_oracle_labels

from .conftest import base_cfg

TRAIN = dict(steps=3, batch_size=8, lr=1e-3, lr_schedule="constant", lr_warmup_steps=0, checkpoint_every=2,
             log_every=1, heldout_fraction=0.3, eval_batch_size=16, mode="lora", anchors=0)


@pytest.fixture(scope="module")
def labels(small_round, tmp_path_factory):
    out = tmp_path_factory.mktemp("labels") / "round-1"
    counts = build_oracle_labels(small_round.candidates / "candidates.json", small_round.hidden, out, seed=1)
    return out, counts


@pytest.fixture(scope="module")
def trained(tiny_model, labels, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    cfg = TrainDiscriminatorConfig(base=base_cfg(tmp, tiny_model), **TRAIN)
    first = train_discriminator.run(cfg, tiny_model, [labels[0]], tmp / "disc", round_id=1)
    return cfg, tmp, first


def test_oracle_labels(labels):
    out, counts = labels
    entries = read_triplets(out / "meta.json")
    assert counts["n"] == len(entries) == 12 * 2 + 12 * 3              # 2 candidates + gt/leave/noise per input
    assert counts["good_rate_gt"] == 1.0 and counts["good_rate_leave"] == 0.0
    assert counts["good_rate_noise"] == 0.0
    for e in entries:                                                   # every path resolves inside the folder
        for rel in (e.source, e.mask, e.GT):
            assert resolve_in_root(out, rel).is_file()
        assert e.score in (0.0, 1.0) and e.kind in ("candidate", "gt", "leave", "noise")


def test_train_discriminator_writes_model_split_and_metrics(trained, labels):
    cfg, tmp, res = trained
    out = tmp / "disc"
    assert {INFO_FILE, "pytorch_lora_weights.safetensors", "head.safetensors", "split.json",
            "heldout_scores.json", "train_summary.json"} <= {p.name for p in out.iterdir()}
    info = read_info(out)
    assert info.loss == "bce" and info.resolution == 64 and info.lora_rank == cfg.lora_rank
    split = json.loads((out / "split.json").read_text())
    assert split["heldout"] and split["train"] and not set(split["heldout"]) & set(split["train"])
    m = res.metrics
    assert m["steps"] == 3 and m["n_heldout_samples"] + m["n_train_samples"] == 60
    assert {"accuracy", "roc_auc", "ece", "est_success_rate", "human_success_rate"} <= set(m["heldout"]["all"])
    assert {"kind_gt", "kind_leave", "kind_candidate"} <= set(m["heldout"])
    rows = json.loads((out / "heldout_scores.json").read_text())
    assert len(rows) == m["n_heldout_samples"] and all(0 <= r["score"] <= 1 for r in rows)


def test_train_discriminator_resumes_and_keeps_split(trained, labels, tiny_model):
    cfg, tmp, _ = trained
    again = train_discriminator.run(cfg, tiny_model, [labels[0]], tmp / "disc2")
    assert again.metrics["resumed_from"] == 2                           # checkpoint-2 of the same config
    # a later round with another fraction keeps the previous held-out inputs held out
    later = cfg.model_copy(update={"heldout_fraction": 0.0})
    train_discriminator.run(later, tiny_model, [labels[0]], tmp / "disc3", prev=tmp / "disc")
    old, new = (json.loads((tmp / d / "split.json").read_text()) for d in ("disc", "disc3"))
    assert old["heldout"] and old["heldout"] == new["heldout"]


def test_auto_score_accepts_and_links(trained, small_round, tiny_model, tmp_path):
    _, tmp, _ = trained
    acfg = AutoScoreConfig(base=base_cfg(tmp, tiny_model), threshold=0.0, batch_size=5)
    res = auto_score.run(acfg, tmp / "disc", small_round.candidates, tmp_path / "auto", hidden=small_round.hidden)
    cands = read_candidates(tmp_path / "auto" / "candidates.json")
    assert len(cands) == 24 and all(c.score is not None and 0 < c.score < 1 for c in cands)
    acc = read_triplets(tmp_path / "auto" / "meta.json")
    assert res.metrics["n_accepted"] == len(acc) == 24                  # threshold 0: every probability passes
    # half the candidates are the source itself: the judge calls at most the Telea half clean
    prec = res.metrics["auto_precision"]
    assert prec["n"] == 24 and prec["n_without_gt"] == 0 and prec["precision"] <= 0.5
    assert prec["reasons"].get("object_remains", 0) >= 10
    for t in acc:
        assert all(resolve_in_root(tmp_path / "auto", r).is_file() for r in (t.source, t.mask, t.GT))
    assert t.GT.startswith("results/")                                  # the result image is the GT
    # humans' candidates are excluded; a high threshold accepts nothing
    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps({"items": [{"id": cands[0].id}]}))
    res2 = auto_score.run(acfg.model_copy(update={"threshold": 0.999}), tmp / "disc", small_round.candidates,
                          tmp_path / "auto2", exclude=sel)
    assert res2.metrics["n_accepted"] == 0 and res2.metrics["n_excluded"] == 1
    assert res2.metrics["auto_precision"] is None                       # no hidden GT given: unknown


def test_auto_score_min_precision_sets_the_threshold_from_the_heldout_labels(trained, small_round, tiny_model,
                                                                              tmp_path):
    _, tmp, _ = trained
    disc = tmp_path / "disc"
    shutil.copytree(tmp / "disc", disc)
    # held-out labels written by hand: above 0.6 three of four are good (0.75), above 0.3 three of six
    rows = [{"label": lab, "score": sc} for lab, sc in ((1, 0.9), (1, 0.8), (0, 0.7), (1, 0.6), (0, 0.5), (0, 0.3))]
    (disc / "heldout_scores.json").write_text(json.dumps(rows))
    acfg = AutoScoreConfig(base=base_cfg(tmp, tiny_model), min_precision=0.75, min_support=2, batch_size=5)
    res = auto_score.run(acfg, disc, small_round.candidates, tmp_path / "auto")
    scores = [c.score for c in read_candidates(tmp_path / "auto" / "candidates.json")]
    assert 0.5 < res.metrics["threshold"] < 0.6
    assert res.metrics["threshold_rule"] == {"rule": "min_precision", "precision": 0.75, "n_above": 4,
                                             "precision_lower95": pytest.approx(0.3006, abs=1e-4), "n_heldout": 6,
                                             "min_precision": 0.75, "min_support": 2, "bound": "estimate"}
    assert res.metrics["n_accepted"] == sum(s > res.metrics["threshold"] for s in scores)
    # no threshold is 90 % precise over >= 3 labels: nothing is accepted, and the metrics say why
    none = auto_score.run(acfg.model_copy(update={"min_precision": 0.9, "min_support": 3}), disc,
                          small_round.candidates, tmp_path / "auto2")
    assert none.metrics["n_accepted"] == 0 and none.metrics["threshold"] is None
    assert read_triplets(tmp_path / "auto2" / "meta.json") == []
    # the interval's lower end instead: 2 of 2 (0.342) qualifies at 0.32, 3 of 4 (0.301) does not
    low = auto_score.run(acfg.model_copy(update={"min_precision": 0.32, "precision_bound": "lower95"}), disc,
                         small_round.candidates, tmp_path / "auto_low")
    assert low.metrics["threshold_rule"]["n_above"] == 2 and 0.7 < low.metrics["threshold"] < 0.8
    (disc / "heldout_scores.json").unlink()
    with pytest.raises(ValueError, match=r"heldout_scores.json does not exist.*min_precision: null"):
        auto_score.run(acfg, disc, small_round.candidates, tmp_path / "auto3")
    with pytest.raises(ValueError, match="two rules for one threshold"):
        AutoScoreConfig(base=base_cfg(tmp, tiny_model), threshold=0.5, min_precision=0.9)


def test_select_random_then_mixed(trained, small_round, tiny_model, tmp_path):
    _, tmp, _ = trained
    scfg = SelectConfig(base=base_cfg(tmp, tiny_model), n_select=6, uncertain_fraction=0.5, unit="candidate")
    r1 = select.run(scfg, small_round.candidates, tmp_path / "s1.json", round_id=1)
    assert r1.metrics["method"] == "random" and r1.metrics["n_random"] == 6
    r2 = select.run(scfg, small_round.candidates, tmp_path / "s2.json", discriminator=tmp / "disc", round_id=2)
    doc = json.loads((tmp_path / "s2.json").read_text())
    assert r2.metrics["n_uncertain"] == 3 and r2.metrics["n_random"] == 3 and len(doc["items"]) == 6
    assert all(it["score"] is not None for it in doc["items"])


def test_mains_parse_argv(trained, labels, small_round, tiny_model, tmp_path):
    _, tmp, _ = trained
    params = {"base": base_cfg(tmp, tiny_model).model_dump(), "select": {"fraction": 0.5, "unit": "input"},
              "auto_score": {"batch_size": 8}, "train_discriminator": {**TRAIN, "steps": 1}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    p = str(tmp_path / "params.yaml")
    # rounds 1..N from a root (the annotation layout), 'none' = no previous discriminator
    assert train_discriminator.main(["--params", p, "--round", "1", "--init", str(tiny_model), "--labels-root",
                                     str(labels[0].parent), "--prev", "none", "--out", str(tmp_path / "d"),
                                     "--metrics", str(tmp_path / "m_train.json")]) == 0
    assert json.loads((tmp_path / "m_train.json").read_text())["steps"] == 1
    with pytest.raises(FileNotFoundError, match="round-2"):
        train_discriminator.main(["--params", p, "--round", "2", "--init", str(tiny_model), "--labels-root",
                                  str(labels[0].parent), "--out", str(tmp_path / "d2")])
    assert select.main(["--params", p, "--candidates", str(small_round.candidates), "--out",
                        str(tmp_path / "sel.json"), "--metrics", str(tmp_path / "m_sel.json"),
                        "--discriminator", "none"]) == 0
    assert json.loads((tmp_path / "m_sel.json").read_text())["n_selected_units"] == 6
    assert auto_score.main(["--params", p, "--discriminator", str(tmp / "disc"), "--candidates",
                            str(small_round.candidates / "candidates.json"), "--out", str(tmp_path / "auto"),
                            "--metrics", str(tmp_path / "m_auto.json")]) == 0
    assert json.loads((tmp_path / "m_auto.json").read_text())["n_candidates"] == 24
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**params, "select": {"fractoin": 0.5}}))
    assert select.main(["--params", str(tmp_path / "bad.yaml"), "--candidates", str(small_round.candidates),
                        "--out", str(tmp_path / "x.json")]) == 2     # typo in params: clean exit 2


def test_config_checks(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="pos_weight"):
        TrainDiscriminatorConfig(base=base_cfg(tmp_path, tiny_model), loss="softplus_mse", balance="pos_weight")
    with pytest.raises(ValueError, match="threshold"):
        TrainDiscriminatorConfig(base=base_cfg(tmp_path, tiny_model), threshold=1.5)
    with pytest.raises(ValueError, match="rank_weight=0.5 .* set inputs_per_batch"):
        TrainDiscriminatorConfig(base=base_cfg(tmp_path, tiny_model), rank_weight=0.5)
    with pytest.raises(ValueError, match="use balance: pos_weight"):
        TrainDiscriminatorConfig(base=base_cfg(tmp_path, tiny_model), inputs_per_batch=4, balance="oversample",
                                 loss="softplus_mse")


def test_whole_input_batches_rank_siblings(tiny_model, labels, tmp_path):
    """inputs_per_batch: the training entries grouped by input (each candidate once), a batch of whole
    inputs with each row's group; rank_weight adds the sibling ranking to the loss (a higher first loss
    on the same batches, since softplus > 0), and the held-out metrics hold the within-input AUC."""
    from rorem_core.reward.train import prepare_labels, whole_input_batches

    cfg = TrainDiscriminatorConfig(base=base_cfg(tmp_path, tiny_model), **{**TRAIN, "inputs_per_batch": 2})
    data = prepare_labels(cfg, tiny_model, [labels[0] / "meta.json"], None)
    assert len(data.train_groups) == len(data.split["train"])                 # one group per training input
    assert sorted(e for g in data.train_groups for e in g) == sorted(data.table.entries)
    batch = whole_input_batches(data.train_groups[:2])
    sizes = [len(g) for g in data.train_groups[:2]]
    assert batch["group"].tolist() == [0] * sizes[0] + [1] * sizes[1] and len(batch["target"]) == sum(sizes)
    plain = train_discriminator.run(cfg, tiny_model, [labels[0]], tmp_path / "plain").metrics
    ranked = train_discriminator.run(cfg.model_copy(update={"rank_weight": 1.0}), tiny_model, [labels[0]],
                                     tmp_path / "ranked").metrics
    assert ranked["first_loss"] > plain["first_loss"]
    within = ranked["heldout_within_input"]
    assert within["n_groups"] >= 1 and within["n_pairs"] >= within["n_groups"] and 0 <= within["auc"] <= 1


def test_anchors_join_training_only(tiny_model, labels, tmp_path):
    """Known-good GT / known-bad "object left" anchors from triplets with ground truth: they are added to
    the training side, never to the held-out metrics, and a missing anchor set is a clear error."""
    from rorem_core.data.synthetic import SyntheticConfig, write_triplets
    from rorem_core.reward.anchors import read_anchors
    from rorem_core.reward.train import prepare_labels

    seed = tmp_path / "seed"
    write_triplets(seed, SyntheticConfig(size=64), "seed", 6, 0.0)
    anchors = read_anchors(seed / "meta.json", 4, seed=0)
    assert [a[3] for a in anchors] == [1.0, 0.0] * 4
    assert all(a[2] == a[0] for a in anchors[1::2]) and all(a[2] != a[0] for a in anchors[::2])
    cfg = TrainDiscriminatorConfig(base=base_cfg(tmp_path, tiny_model), **{**TRAIN, "anchors": 4})
    plain = prepare_labels(cfg.model_copy(update={"anchors": 0}), tiny_model, [labels[0] / "meta.json"], None)
    data = prepare_labels(cfg, tiny_model, [labels[0] / "meta.json"], None, seed)
    assert len(data.train) == len(plain.train) + 8 and len(data.held) == len(plain.held)
    assert not any(s.extra.get("kind", "").startswith("anchor") for s in data.held)
    with pytest.raises(ValueError, match="--anchors data/seed"):
        prepare_labels(cfg, tiny_model, [labels[0] / "meta.json"], None)


def test_near_miss_anchors_are_what_the_judge_calls_them(tiny_model, labels, tmp_path):
    """anchor_smudges: per anchor triplet, pairs of a visible smudge (bad) and a faint error (good) of the
    same input, made from the GT; the judge agrees with every label, the files are made once (a rerun reuses
    them), and they join the training side only, grouped with their input's other anchors."""
    from rorem_core.data.images import load_mask, load_rgb
    from rorem_core.data.synthetic import SyntheticConfig, write_triplets
    from rorem_core.evaluation.judge import judge
    from rorem_core.reward.anchors import read_anchors, write_near_misses
    from rorem_core.reward.train import prepare_labels

    seed = tmp_path / "seed"
    write_triplets(seed, SyntheticConfig(size=64), "seed", 6, 0.0)
    f = write_near_misses(seed / "meta.json", 3, 2, 0, tmp_path / "work")
    rows = json.loads(f.read_text())
    assert [r["kind"] for r in rows] == ["anchor_smudge", "anchor_faint"] * 6
    assert [r["shape"] for r in rows[:4]] == ["tone", "tone", "ghost", "ghost"]
    gts = {str(seed / t["source"]): seed / t["GT"] for t in json.loads((seed / "meta.json").read_text())}
    for r in rows:
        v = judge(load_rgb(r["source"]), load_mask(r["mask"]), load_rgb(r["result"]), load_rgb(gts[r["source"]]))
        assert v.good == (r["label"] == 1.0), (r, v)
    stamp = Path(rows[0]["result"]).stat().st_mtime_ns
    assert write_near_misses(seed / "meta.json", 3, 2, 0, tmp_path / "work") == f
    assert Path(rows[0]["result"]).stat().st_mtime_ns == stamp
    assert len(read_anchors(seed / "meta.json", 3, 0, 2, tmp_path / "work")) == 3 * 2 + 12
    cfg = TrainDiscriminatorConfig(base=base_cfg(tmp_path, tiny_model), **{**TRAIN, "anchors": 3, "anchor_smudges": 1})
    data = prepare_labels(cfg, tiny_model, [labels[0] / "meta.json"], None, seed)
    plain = prepare_labels(cfg.model_copy(update={"anchor_smudges": 0}), tiny_model, [labels[0] / "meta.json"], None, seed)
    assert len(data.train) == len(plain.train) + 6 and len(data.held) == len(plain.held)
    # an anchor input's group grows from (GT, object left) by its smudge and its faint error (which may round to
    # the GT's very pixels: one cache entry then)
    assert sum(len(g) >= 3 for g in data.train_groups) == sum(len(g) >= 3 for g in plain.train_groups) + 3
