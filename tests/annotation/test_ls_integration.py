"""Against a real Label Studio (session fixture ``ls``): push, push again, simulate, pull, pull again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from annotation.client import LabelStudioClient, LabelStudioError
from annotation.config import SimulatedConfig
from annotation.paths import PathRefused
from annotation.progress import round_progress
from annotation.pull import pull_round
from annotation.push import push_round
from annotation.simulated import simulate_round
from rorem_core.data.formats import read_candidates, read_pairs, read_triplets, write_candidates

pytestmark = pytest.mark.integration


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _titles(client: LabelStudioClient) -> list[str]:
    data = client.request("GET", "/api/projects/", params={"page_size": 1000}).json()
    return [p["title"] for p in data["results"]]


def test_push_twice_creates_no_duplicates(ls, new_round):
    r = new_round(ls.data, 1)
    cfg = ls.cfg(overlap=2, min_labels=2, prefill=True)   # pre-annotations on (blind review is the default)
    first = push_round(ls.client, cfg, 1, r.candidates, ls.data, priorities={r.bad[2]: 5.0})
    assert first.created == {"review": 6, "pairwise": 3} and first.existing == {"review": 0, "pairwise": 0}
    again = push_round(ls.client, cfg, 1, r.candidates, ls.data)
    assert again.created == {"review": 0, "pairwise": 0} and again.existing == {"review": 6, "pairwise": 3}
    assert again.projects == first.projects
    titles = _titles(ls.client)
    assert titles.count("t round 1 review") == 1 and titles.count("t round 1 pairwise") == 1
    tasks = sorted(ls.client.iter_tasks(first.projects["review"]), key=lambda t: t["id"])
    assert len(tasks) == 6
    assert tasks[0]["data"]["candidate_id"] == r.bad[2]          # highest priority imported first
    by_id = {t["data"]["candidate_id"]: t for t in tasks}
    assert by_id[r.good[0]]["total_predictions"] == 0            # input p000 has no model score
    assert by_id[r.good[1]]["total_predictions"] == 1
    project = ls.client.get_project(first.projects["review"])
    assert project["maximum_annotations"] == 2
    # the image URLs are really served (the storage record authorises them)
    url = by_id[r.good[1]]["data"]["result"]
    resp = ls.client.request("GET", url)
    assert resp.headers["content-type"] == "image/png" and resp.content[:4] == b"\x89PNG"


def test_simulate_pull_twice_identical(ls, new_round):
    r = new_round(ls.data, 2)
    cfg = ls.cfg(overlap=2, min_labels=2, simulated=SimulatedConfig(names=(
        "sim-annotator-1@simulated.local", "sim-annotator-2@simulated.local"), error_rate=0.0))
    push_round(ls.client, cfg, 2, r.candidates, ls.data)
    before = round_progress(ls.client, cfg, 2)
    assert (before["done"], before["total"], before["complete"]) == (0, 9, False)
    rep = simulate_round(ls.client, cfg, 2, r.candidates, r.hidden)
    assert rep.created == {"review": 12, "pairwise": 6}
    assert simulate_round(ls.client, cfg, 2, r.candidates, r.hidden).created == {}   # labelling twice adds nothing
    prog = round_progress(ls.client, cfg, 2)
    assert prog["complete"] and prog["review"]["per_annotator"] == {
        "sim-annotator-1@simulated.local": 6, "sim-annotator-2@simulated.local": 6}
    out = ls.data / "annotations" / "round-2"
    res = pull_round(ls.client, cfg, 2, r.candidates, out)
    assert res.new_snapshots == ["review_export.json", "pairwise_export.json"]
    scored = {t.id: t.score for t in read_triplets(out / "scored" / "meta.json")}
    assert scored == {**{c: 1.0 for c in r.good}, **{c: 0.0 for c in r.bad}}
    pairs = read_pairs(out / "pairs" / "meta.json")
    assert sorted(p.preferred_id for p in pairs) == sorted(r.good)
    assert res.summary["review"]["agreement"]["fleiss_kappa"] == pytest.approx(1.0)
    snapshot = _files(out)
    again = pull_round(ls.client, cfg, 2, r.candidates, out)
    assert again.new_snapshots == [] and _files(out) == snapshot


def test_known_disagreement_and_problems(ls, new_round):
    """Two simulated annotators, the second always wrong: every task ties, Fleiss' kappa = -1."""
    r = new_round(ls.data, 3)
    cfg = ls.cfg(overlap=2, min_labels=2, pairwise=False, simulated=SimulatedConfig(names=(
        "sim-annotator-1@simulated.local", "sim-annotator-2@simulated.local"), error_rate=0.0, disagreement=1.0))
    push = push_round(ls.client, cfg, 3, r.candidates, ls.data)
    simulate_round(ls.client, cfg, 3, r.candidates, r.hidden)
    out = ls.data / "annotations" / "round-3"
    res = pull_round(ls.client, cfg, 3, r.candidates, out)
    review = res.summary["review"]
    assert review["tie"] == 6 and review["labeled"] == 0 and res.scored == 0
    assert review["agreement"]["fleiss_kappa"] == pytest.approx(-1.0)
    assert review["agreement"]["krippendorff_alpha"] == pytest.approx((1 - 6) / 6)
    # an annotation on an unknown task, and a result that does not match the config: reported
    pid = push.projects["review"]
    ghost = {"data": {"candidate_id": "ghost", "original": "x", "overlay": "x", "result": "x"},
             "annotations": [{"result": [{"from_name": "quality", "to_name": "img_result", "type": "choices",
                                          "value": {"choices": ["good"]}}]}]}
    ls.client.import_tasks(pid, [ghost])
    task = next(t for t in ls.client.iter_tasks(pid) if t["data"]["candidate_id"] == r.good[0])
    users = {u["email"]: u["id"] for u in ls.client.users()}
    ls.client.create_annotation(task["id"], [{"from_name": "quality", "to_name": "img_result",
                                              "type": "choices", "value": {"choices": ["maybe"]}}],
                                completed_by=users["admin@rorem.local"])
    res2 = pull_round(ls.client, cfg, 3, r.candidates, out)
    assert res2.new_snapshots == ["review_export.2.json"]               # new version, old one untouched
    assert (out / "review_export.json").read_bytes() != (out / "review_export.2.json").read_bytes()
    kinds = sorted(p["kind"] for p in res2.summary["review"]["problems"])
    assert kinds == ["result_mismatch", "unknown_task"]


def test_paths_outside_served_root_are_refused_before_import(ls, new_round, tmp_path):
    r = new_round(ls.data, 4, n_inputs=1)
    cands = read_candidates(r.candidates)
    outside = tmp_path / "outside.png"
    outside.write_bytes((r.candidates.parent / cands[0].result).read_bytes())
    link = r.candidates.parent / "results" / "escape.png"
    os.symlink(outside, link)                      # a symlink inside data/ pointing outside it
    cands[0] = cands[0].model_copy(update={"result": "results/escape.png"})
    cands[1] = cands[1].model_copy(update={"mask": "../../../../outside.png"})
    write_candidates(r.candidates, cands)
    with pytest.raises(PathRefused, match="outside the served root") as e:
        push_round(ls.client, ls.cfg(), 4, r.candidates, ls.data)
    assert "escape.png" in str(e.value)
    assert ls.client.find_project("t round 4 review") is None


def test_server_down_fails_clearly_and_keeps_pulled_files(ls, new_round):
    r = new_round(ls.data, 5, n_inputs=1)
    cfg = ls.cfg(pairwise=False)
    push_round(ls.client, cfg, 5, r.candidates, ls.data)
    out = ls.data / "annotations" / "round-5"
    pull_round(ls.client, cfg, 5, r.candidates, out)
    before = _files(out)
    dead = LabelStudioClient("http://127.0.0.1:9", ls.token, retries=2, backoff_s=0.01)
    with pytest.raises(LabelStudioError) as e:
        pull_round(dead, cfg, 5, r.candidates, out)
    msg = str(e.value)
    assert "http://127.0.0.1:9" in msg and "rorem labelstudio up" in msg and ls.token not in msg
    assert _files(out) == before


def test_token_never_in_logs_or_status(ls):
    log = ls.server.log_file.read_text(errors="replace")
    assert ls.token not in log and len(log) > 0
    assert ls.token not in repr(ls.client) and ls.token not in str(ls.server.status())
    status = ls.server.status()
    assert status["running"] and status["version"] == "1.23.2"


def test_signup_without_invite_is_refused(ls):
    import httpx

    with httpx.Client(base_url=ls.client.url) as anon:
        page = anon.get("/user/signup/")
        csrf = anon.cookies.get("csrftoken")
        resp = anon.post("/user/signup/", data={"email": "intruder@example.com", "password": "intruder-pw-123",
                                                "csrfmiddlewaretoken": csrf},
                         headers={"Referer": ls.client.url + "/user/signup/"})
    assert page.status_code == 200 and csrf
    assert resp.status_code == 403
    assert "intruder@example.com" not in {u["email"] for u in ls.client.users()}


def test_cli_add_user_and_idempotent_up(ls, monkeypatch, capsys):
    import io

    from annotation import cli

    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password-1\n"))
    assert cli.main(["--root", str(ls.root), "add-user", "reviewer@rorem.local", "--password-stdin"]) == 0
    out = capsys.readouterr().out
    assert "created reviewer@rorem.local" in out and "a-long-password-1" not in out
    assert "reviewer@rorem.local" in {u["email"] for u in ls.client.users()}
    pid = ls.server.pid()
    assert cli.main(["--root", str(ls.root), "up"]) == 0 and ls.server.pid() == pid   # already running: no-op
    assert ls.token not in capsys.readouterr().out


def test_restart_keeps_data(ls):
    """down + up on the migrated data dir: same projects afterwards (runs last in this module)."""
    from annotation import cli

    before = sorted(_titles(ls.client))
    assert cli.main(["--root", str(ls.root), "down"]) == 0 and ls.server.pid() is None
    assert not ls.client.health()
    assert cli.main(["--root", str(ls.root), "up"]) == 0
    assert sorted(_titles(ls.client)) == before and len(before) >= 2


def test_changed_token_is_realigned_on_up(ls):
    """The admin token is fixed in the data dir at first start; a new env token is applied by `up`."""
    from annotation.server import LabelStudioServer

    other = LabelStudioServer(root=ls.root, cfg=ls.server.cfg, token="rorem-other-token-0123456789")
    with other.client() as c2:
        with pytest.raises(LabelStudioError) as e:
            c2.whoami()
        assert e.value.status == 401
        other._check_token()                       # what `up` does after /health
        assert c2.whoami()["email"] == "admin@rorem.local"
    ls.server._check_token()                       # and back to the session's token
    assert ls.client.whoami()["email"] == "admin@rorem.local"


def test_simulated_skips_are_cancelled_annotations(ls, new_round):
    r = new_round(ls.data, 6, n_inputs=1)
    cfg = ls.cfg(simulated=SimulatedConfig(names=("sim-annotator-1@simulated.local",), skip_rate=1.0))
    push_round(ls.client, cfg, 6, r.candidates, ls.data)
    rep = simulate_round(ls.client, cfg, 6, r.candidates, r.hidden)
    assert rep.skipped == {"review": 2, "pairwise": 1} and rep.created == {}
    prog = round_progress(ls.client, cfg, 6)
    assert prog["done"] == 0 and prog["review"]["skipped"] == 2
    res = pull_round(ls.client, cfg, 6, r.candidates, ls.data / "annotations" / "round-6")
    assert res.summary["review"]["annotations"]["skipped"] == 2 and res.summary["review"]["unlabeled"] == 2
    assert res.scored == 0 and res.pairs == 0
