"""The bad-input corpus (issue 7 §3): every case gets a clear answer naming the input and the fix,
and nothing already stored changes (every folder involved is hashed before and after).

  dataset  images and meta.json, through `rorem validate` / require_valid / the readers
           -> a Problem (file, entry, message, fix); training would refuse the dataset first
  export   Label Studio exports through pull_round -> the documented behaviour: the bad item gives
           no vote, is listed in summary.json problems (task, annotation, annotator, fix) and counted
  params   params.yaml through the stage / annotation config loaders -> ConfigError naming the
           file, the key and the fix

Each table row is (case id, what is wrong, the expected answer). ``pytest -k <case id>`` runs one.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from rorem_core.data.formats import FormatError, read_triplets
from rorem_core.data.images import load_rgb
from rorem_core.data.synthetic import SyntheticConfig, write_triplets
from rorem_core.data.validate import DatasetInvalid, require_valid, validate_dataset
from rorem_core.data.validate import main as validate_main

META = "<meta.json>"      # problems about the JSON file itself name its full path


# ---- dataset mutations ---------------------------------------------------------------------------

def _meta(ds: Path) -> list:
    return json.loads((ds / "meta.json").read_text())


def _set_meta(ds: Path, change: Callable[[list], object]) -> None:
    meta = _meta(ds)
    meta = change(meta) or meta
    (ds / "meta.json").write_text(json.dumps(meta))


def _set(i: int, **kv) -> Callable[[Path], None]:
    return lambda ds: _set_meta(ds, lambda m: m[i].update(kv))


def _drop(i: int, key: str) -> Callable[[Path], None]:
    return lambda ds: _set_meta(ds, lambda m: m[i].pop(key) and None)


def _truncate(rel: str) -> Callable[[Path], None]:
    def f(ds: Path) -> None:
        data = (ds / rel).read_bytes()
        (ds / rel).write_bytes(data[: len(data) // 2])
    return f


def _write(rel: str, data: bytes) -> Callable[[Path], None]:
    return lambda ds: (ds / rel).write_bytes(data)


def _image(rel: str, arr: np.ndarray | None = None, mode: str | None = None, fmt: str = "PNG",
           new_rel: str | None = None, key: str | None = None, entry: int = 0) -> Callable[[Path], None]:
    """Rewrite ``rel`` (from ``arr``, or re-encoded in ``mode``), optionally under a new name in the meta."""
    def f(ds: Path) -> None:
        im = Image.fromarray(arr) if arr is not None else Image.open(ds / rel).convert("RGB")
        if mode == "P":
            im = im.convert("P", palette=Image.ADAPTIVE)
        elif mode:
            im = im.convert(mode)
        im.save(ds / (new_rel or rel), format=fmt)
        if new_rel:
            _set_meta(ds, lambda m: m[entry].update({key: new_rel}))
    return f


def _huge_png(w: int, h: int) -> bytes:
    """A valid PNG header declaring w x h pixels with almost no data: nothing may decode it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _outside(ds: Path) -> None:
    (ds.parent / "outside.png").write_bytes((ds / "GT" / "v-00000.png").read_bytes())


GRAY16 = (np.linspace(0, 65535, 32 * 32).reshape(32, 32)).astype(np.uint16)

# id | mutation | expected problem (file, message part, fix part) | also refused by read_triplets
DATASET_CASES = [
    ("png-truncated", _truncate("GT/v-00000.png"), ("GT/v-00000.png", "cannot decode", "re-export"), False),
    ("png-zero-byte", _write("source/v-00001.png", b""), ("source/v-00001.png", "0 bytes", "re-export"), False),
    ("png-not-an-image", _write("mask/v-00002.png", b"hello"), ("mask/v-00002.png", "cannot decode", "re-export"), False),
    ("png-huge-header-100M", _write("GT/v-00003.png", _huge_png(10_000, 10_000)),
     ("GT/v-00003.png", "too large", "downscale"), False),
    ("png-huge-header-10G", _write("source/v-00003.png", _huge_png(100_000, 100_000)),
     ("source/v-00003.png", "too large", "downscale"), False),
    ("mask-size-mismatch", _image("mask/v-00001.png", np.pad(np.full((8, 8), 255, np.uint8), 4)),
     ("mask/v-00001.png", "sizes differ", "resize mask/v-00001.png to 32x32"), False),
    ("gt-size-mismatch", _image("GT/v-00002.png", np.zeros((16, 32, 3), np.uint8)),
     ("GT/v-00002.png", "sizes differ", "resize"), False),
    ("mask-all-black", _image("mask/v-00000.png", np.zeros((32, 32), np.uint8)),
     ("mask/v-00000.png", "mask is empty", "redraw the mask"), False),
    ("mask-all-white", _image("mask/v-00003.png", np.full((32, 32), 255, np.uint8)),
     ("mask/v-00003.png", "covers the whole image", "redraw the mask"), False),
    ("image-missing", lambda ds: (ds / "GT" / "v-00001.png").unlink(), ("GT/v-00001.png", "file not found", "restore"), False),
    ("image-is-a-folder", _set(0, GT="GT"), ("GT", "is a folder", "image file"), False),
    ("meta-invalid-json", _write("meta.json", b'[{"source": "a.png",]'), (META, "invalid JSON", "fix the syntax"), True),
    ("meta-not-utf8", _write("meta.json", b"\xff\xfe[\x00"), (META, "invalid JSON", "fix the syntax"), True),
    ("meta-object-not-list", _write("meta.json", b'{"source": "source/v-00000.png"}'),
     (META, "expected a JSON list of entries", "write meta.json as [{...}, ...]"), True),
    ("meta-entry-not-object", lambda ds: _set_meta(ds, lambda m: m.append("source/v-00000.png")),
     (META, "expected an object, found str", "make every entry an object"), True),
    ("meta-wrong-type", _set(1, source=5), (META, "key 'source': Input should be a valid string", "keys source, mask, GT"), True),
    ("meta-missing-key", _drop(2, "GT"), (META, "missing key 'GT'", "keys source, mask, GT"), True),
    ("meta-empty-list", _write("meta.json", b"[]"), (META, "no entries", "regenerate"), False),
    ("meta-unknown-keys", _write("meta.json", b'[{"image": "a.png"}]'), (META, "cannot tell the dataset kind", "--kind"), False),
    ("path-absolute", _set(0, source="/etc/passwd"), ("/etc/passwd", "absolute", "relative"), False),
    ("path-dotdot", lambda ds: (_outside(ds), _set(1, GT="../outside.png")(ds)),
     ("../outside.png", "escapes the dataset root", "keep every file inside"), False),
    ("path-symlink-out", lambda ds: (_outside(ds), (ds / "GT" / "link.png").symlink_to(ds.parent / "outside.png"),
                                     _set(2, GT="GT/link.png")(ds)),
     ("GT/link.png", "escapes the dataset root", "keep every file inside"), False),
    ("duplicate-entry", lambda ds: _set_meta(ds, lambda m: m.append({**m[1], "id": "copy"})),
     (META, "duplicate of entry 1", "remove one"), False),
    ("duplicate-id", lambda ds: _set_meta(ds, lambda m: m[2].update(id=m[0]["id"])),
     (META, "duplicate id 'v-00000'", "ids must be unique"), False),
    ("score-out-of-range", lambda ds: _set_meta(ds, lambda m: [e.update(score=1.0) for e in m] and m[0].update(score=7)),
     (META, "score 7 is outside [0, 1]", "probability"), False),
]

# inputs in another mode are converted on load (documented): accepted, with a note naming the file
CONVERTED_CASES = [
    ("mode-cmyk-jpeg", _image("source/v-00000.png", mode="CMYK", fmt="JPEG", new_rel="source/v-00000.jpg",
                              key="source"), "source/v-00000.jpg", "mode CMYK"),
    ("mode-16bit-gray", _image("GT/v-00001.png", GRAY16), "GT/v-00001.png", "mode I;16"),
    ("mode-palette", _image("source/v-00002.png", mode="P"), "source/v-00002.png", "mode P"),
    ("mode-rgba-mask", _image("mask/v-00003.png", mode="RGBA"), "mask/v-00003.png", "mask is mode RGBA"),
]


@pytest.fixture(scope="module")
def clean_ds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus") / "ds"
    write_triplets(root, SyntheticConfig(size=32), "v", 4, hard_fraction=0.5)
    return root


@pytest.fixture
def ds(clean_ds, tmp_path) -> Path:
    import shutil

    shutil.copytree(clean_ds, tmp_path / "ds")
    return tmp_path / "ds"


@pytest.mark.parametrize("case, mutate, expected, reader", DATASET_CASES, ids=[c[0] for c in DATASET_CASES])
def test_bad_dataset_input(ds, rel, capsys, case, mutate, expected, reader):
    mutate(ds)
    file, message, fix = expected
    file = str(ds / "meta.json") if file == META else file
    before = rel.tree_hash(ds.parent)

    report = validate_dataset(ds)
    hits = [p for p in report.problems if p.file == file and message in p.message]
    assert hits, f"[{case}] no problem naming {file!r} with {message!r}:\n{report.format()}"
    assert fix in hits[0].fix, f"[{case}] fix {hits[0].fix!r} lacks {fix!r}"
    with pytest.raises(DatasetInvalid) as e:
        require_valid(ds)                                 # what training calls before any compute
    assert file in str(e.value) and fix in str(e.value)
    assert validate_main([str(ds)]) == 1                  # `rorem validate PATH`
    assert file in capsys.readouterr().out
    if reader:
        with pytest.raises(FormatError) as e:
            read_triplets(ds / "meta.json")
        assert str(ds / "meta.json") in str(e.value)
    assert rel.tree_hash(ds.parent) == before, f"[{case}] validation changed a stored file"


@pytest.mark.parametrize("case, mutate, file, note", CONVERTED_CASES, ids=[c[0] for c in CONVERTED_CASES])
def test_other_image_modes_are_converted_with_a_note(ds, rel, case, mutate, file, note):
    mutate(ds)
    before = rel.tree_hash(ds.parent)
    report = require_valid(ds)
    assert any(n.file == file and note in n.message and n.fix for n in report.notes), report.format()
    assert rel.tree_hash(ds.parent) == before


def test_16bit_grayscale_keeps_its_values():
    """PIL's convert('RGB') clips 16-bit values at 255 (an almost white image); they are scaled."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        Image.fromarray(GRAY16).save(Path(d) / "g.png")
        rgb = load_rgb(Path(d) / "g.png")
    expected = np.rint(GRAY16 / 257.0) / 255.0
    assert np.abs(rgb[..., 0] - expected).max() < 1e-6 and np.allclose(rgb[..., 0], rgb[..., 2])


# ---- Label Studio exports through pull_round -------------------------------------------------------

GOOD, WHO, OTHER = "good", "ann-1@lab.org", "ann-2@lab.org"


def _export(rel, ids: list[str]) -> tuple[list[dict], dict]:
    """Tasks of the 4 candidates with one good vote each; returns (tasks, task id by candidate)."""
    votes = {cid: [rel.annotation(100 + i, i + 1, WHO, rel.review_choice(GOOD))] for i, cid in enumerate(ids)}
    tasks = rel.review_export(ids, votes)
    return tasks, {cid: i + 1 for i, cid in enumerate(ids)}


def _unknown_task(rel, tasks, ids):
    tasks.append({"id": 99, "data": {"candidate_id": "r9-nope-s0"}, "predictions": [],
                  "annotations": [rel.annotation(900, 99, WHO, rel.review_choice(GOOD))]})


def _task_without_key(rel, tasks, ids):
    tasks.append({"id": 98, "data": {"image": "x.png"}, "predictions": [],
                  "annotations": [rel.annotation(901, 98, WHO, rel.review_choice(GOOD))]})


def _wrong_control(rel, tasks, ids):
    tasks[0]["annotations"][0]["result"] = [{"from_name": "rating", "to_name": "result", "type": "rating",
                                             "value": {"rating": 4}}]


def _unknown_choice(rel, tasks, ids):
    tasks[1]["annotations"][0]["result"] = rel.review_choice("bad", ("blurry",))


def _two_qualities(rel, tasks, ids):
    tasks[2]["annotations"][0]["result"][0]["value"]["choices"] = ["good", "bad"]


def _cancelled(rel, tasks, ids):
    tasks[3]["annotations"][0].update(was_cancelled=True, result=[])


def _annotator_without_labels(rel, tasks, ids):
    for t in tasks[:2]:   # a second annotator submitted both tasks without choosing anything
        t["annotations"].append(rel.annotation(200 + t["id"], t["id"], OTHER, [], updated="2026-01-02T00:00:00Z"))


def _duplicate_task(rel, tasks, ids):
    tasks.append({"id": 97, "data": {"candidate_id": ids[0]}, "predictions": [],
                  "annotations": [rel.annotation(902, 97, OTHER, rel.review_choice("good"))]})


# id | how the export is damaged | problem kind | words the problem names | scored triplets | counts
EXPORT_CASES = [
    ("ls-unknown-task-id", _unknown_task, "unknown_task", ["candidate_id='r9-nope-s0'", "task 99"], 4,
     {"on_unknown_tasks": 1}),
    ("ls-task-without-key", _task_without_key, "unknown_task", ["candidate_id=None", "task 98"], 4,
     {"on_unknown_tasks": 1}),
    ("ls-result-wrong-control", _wrong_control, "result_mismatch", ["'rating'", WHO, "annotation 100"], 3,
     {"mismatched": 1}),
    ("ls-result-unknown-choice", _unknown_choice, "result_mismatch", ["blurry", WHO, "annotation 101"], 3,
     {"mismatched": 1}),
    ("ls-result-two-qualities", _two_qualities, "result_mismatch", ["exactly one of good/bad", WHO], 3,
     {"mismatched": 1}),
    ("ls-cancelled-annotation", _cancelled, None, [], 3, {"skipped": 1}),
    ("ls-annotator-without-labels", _annotator_without_labels, "result_mismatch", ["empty result", OTHER], 4,
     {"mismatched": 2}),
    ("ls-duplicate-task", _duplicate_task, "duplicate_task", ["task 97", "votes merged"], 4, {}),
]


def _describe(p: dict) -> str:
    return (f"{p.get('detail')} task {p.get('task_id')} annotation {p.get('annotation_id')} "
            f"{p.get('annotator')}")


@pytest.mark.parametrize("case, damage, kind, names, n_scored, counts", EXPORT_CASES,
                         ids=[c[0] for c in EXPORT_CASES])
def test_bad_label_studio_export(rel, ann_round, case, damage, kind, names, n_scored, counts):
    from annotation.config import AnnotationConfig
    from annotation.pull import pull_round

    cands, out = ann_round
    ids = [c["id"] for c in json.loads(cands.read_text())["candidates"]]
    tasks, _ = _export(rel, ids)
    damage(rel, tasks, ids)
    client, cfg = rel.FakeLabelStudio({"review": tasks}), AnnotationConfig(pairwise=False)
    inputs = rel.tree_hash(cands.parent)

    res = pull_round(client, cfg, 1, cands, out)
    review = json.loads((out / "summary.json").read_text())["review"]
    if kind:
        hits = [p for p in review["problems"] if p["kind"] == kind]
        assert hits and all(w in _describe(hits[0]) for w in names), (case, review["problems"])
        assert hits[0]["fix"], "every problem says what to do"
    else:
        assert review["problems"] == []
    assert res.scored == n_scored and len(json.loads((out / "scored" / "meta.json").read_text())) == n_scored
    for key, n in counts.items():
        assert review["annotations"].get(key) == n, (key, review["annotations"])
    if case == "ls-annotator-without-labels":
        assert review["per_annotator"][OTHER] == {"mismatched": 2}
    if case == "ls-cancelled-annotation":
        assert review["per_annotator"][WHO]["skipped"] == 1 and review["unlabeled"] == 1

    # nothing stored changes: inputs untouched, a second pull of the same export rewrites nothing
    assert rel.tree_hash(cands.parent) == inputs
    pulled = rel.tree_hash(out)
    assert pull_round(client, cfg, 1, cands, out).new_snapshots == [] and rel.tree_hash(out) == pulled


# ---- params.yaml -----------------------------------------------------------------------------------

def _base() -> dict:
    return {"seed": 0, "resolution": 32, "device": "cpu", "wandb_mode": "disabled"}


# id | params (YAML text or dict) | loader: stage name or "annotation" | words the error must hold
PARAMS_CASES = [
    ("params-unknown-key", {"train_remover": {"lrr": 1e-4}}, "train_remover",
     ["train_remover.lrr", "Extra inputs are not permitted", "unknown keys are rejected"]),
    ("params-unknown-base-key", {"base": {**_base(), "resolutoin": 64}}, "generate",
     ["generate.base.resolutoin", "Extra inputs"]),
    ("params-misspelt-section", {"train_remove": {"steps": 5}}, "generate",
     ["unknown section 'train_remove'", "did you mean 'train_remover'", "rename it"]),
    ("params-wrong-type", {"train_remover": {"steps": "many"}}, "train_remover",
     ["train_remover.steps", "valid integer", "(got 'many')"]),
    ("params-section-not-mapping", {"train_remover": [1, 2]}, "train_remover",
     ["[train_remover] must be a mapping", "key: value"]),
    ("params-negative-lr", {"train_remover": {"lr": -1e-4}}, "train_remover",
     ["train_remover.lr", "greater than 0", "(got -0.0001)"]),
    ("params-lora-rank-0", {"train_remover": {"mode": "lora", "lora_rank": 0}}, "train_remover",
     ["train_remover.lora_rank", "greater than or equal to 1", "(got 0)"]),
    ("params-warmup-not-below-steps", {"train_remover": {"steps": 10, "lr_warmup_steps": 50}}, "train_remover",
     ["lr_warmup_steps=50 must be < steps=10"]),
    ("params-fp16-with-bf16", {"train_remover": {"mixed_precision": "fp16", "frozen_dtype": "bf16"}},
     "train_remover", ["mixed_precision=fp16 with frozen_dtype=bf16"]),
    ("params-dpo-full-finetune", {"train_dpo": {"mode": "full"}}, "train_dpo", ["LoRA-only", "set mode: lora"]),
    ("params-disc-threshold-not-probability", {"train_discriminator": {"threshold": 2.0}}, "train_discriminator",
     ["threshold=2.0 is a probability"]),
    ("params-min-labels-over-overlap", {"annotation": {"overlap": 2, "min_labels": 3}}, "annotation",
     ["annotation.min_labels=3 exceeds annotation.overlap=2"]),
    ("params-annotation-unknown-key", {"annotation": {"prot": 8080}}, "annotation",
     ["annotation.prot", "Extra inputs", "unknown keys are rejected"]),
    ("params-gold-share-one", {"annotation": {"gold": {"share": 1.0}}}, "annotation",
     ["annotation.gold.share=1.0: must be in [0, 1)", "0 turns gold tasks off"]),
    ("params-annotation-remote-host", {"annotation": {"host": "0.0.0.0"}}, "annotation",
     ["annotation.host='0.0.0.0'", "loopback", "reverse proxy"]),
    ("params-invalid-yaml", "base: [unclosed\n", "generate", ["invalid YAML"]),
    ("params-not-a-mapping", "- base\n- generate\n", "generate", ["expected a mapping of sections, found list"]),
]


def _load(loader: str, path: Path):
    if loader == "annotation":
        from annotation.cli import load_config

        return load_config(path.parent)
    from rorem_core.config import load_stage_config

    return load_stage_config(loader, path)


@pytest.mark.parametrize("case, params, loader, words", PARAMS_CASES, ids=[c[0] for c in PARAMS_CASES])
def test_bad_params(rel, tmp_path, case, params, loader, words):
    from rorem_core.config import ConfigError

    path = tmp_path / "params.yaml"
    path.write_text(params if isinstance(params, str) else yaml.safe_dump({"base": _base(), **params}))
    before = rel.tree_hash(tmp_path)
    with pytest.raises(ConfigError) as e:
        _load(loader, path)
    msg = str(e.value)
    assert str(path) in msg and all(w in msg for w in words), f"[{case}] {msg}"
    assert rel.tree_hash(tmp_path) == before


def test_a_stage_with_bad_params_exits_2_and_writes_nothing(tmp_path, capsys, rel):
    from rorem_core.stages import train_remover

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"base": _base(), "train_remover": {"lora_rank": 0, "mode": "lora"}}))
    before = rel.tree_hash(tmp_path)
    rc = train_remover.main(["--params", str(path), "--init", str(tmp_path / "m"), "--train", str(tmp_path / "d"),
                             "--out", str(tmp_path / "out"), "--metrics", str(tmp_path / "metrics.json")])
    assert rc == 2 and "train_remover.lora_rank" in capsys.readouterr().err
    assert rel.tree_hash(tmp_path) == before


def test_the_corpus_has_at_least_twenty_cases():
    n = len(DATASET_CASES) + len(CONVERTED_CASES) + len(EXPORT_CASES) + len(PARAMS_CASES)
    assert n >= 20
    ids = [c[0] for c in DATASET_CASES + CONVERTED_CASES + EXPORT_CASES + PARAMS_CASES]
    assert len(set(ids)) == len(ids)
