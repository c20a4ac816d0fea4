"""Security (issue 7 §4): safe checkpoint loading only, data paths confined to their root, Label
Studio's local-files serving confined to the project's data, the API token never in logs or
exceptions, and a scanner that finds a secret anywhere in a project, git history included."""

from __future__ import annotations

import ast
import http.server
import json
import logging
import subprocess
import threading
import traceback
from pathlib import Path

import pytest

from annotation.client import LabelStudioClient, LabelStudioError
from annotation.config import AnnotationConfig
from annotation.paths import PathRefused, inside_root
from annotation.server import LabelStudioServer, ServerError
from rorem_core.data.formats import FormatError, resolve_in_root
from tests.helpers.secrets_scan import find_secrets

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("rorem_core", "annotation", "tasks", "flows", "scripts", "benchmarks")
TOKEN = "rorem-sec-" + "7c1d9e0f2a3b4c5d6e7f8091a2b3c4d5"


# ---- (a) checkpoints load with safetensors or torch.load(weights_only=True) only ------------------

def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _kw_true(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords)


def unsafe_loads(source: str, filename: str = "<src>") -> list[str]:
    """Calls that can run pickled code: torch.load without weights_only=True, pickle/dill/joblib
    loads, numpy loads with allow_pickle=True, yaml.load / yaml.unsafe_load."""
    tree = ast.parse(source, filename=filename)
    aliases: dict[str, str] = {}   # local name -> dotted origin ("from torch import load as tl")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name] = a.name
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, rest = name.partition(".")
        full = f"{aliases.get(head, head)}.{rest}".rstrip(".") if name else ""
        where = f"{filename}:{node.lineno} {name}()"
        if full == "torch.load" and not _kw_true(node, "weights_only"):
            bad.append(f"{where} without weights_only=True")
        elif full.split(".")[0] in ("pickle", "cPickle", "_pickle", "dill", "cloudpickle") and \
                full.rsplit(".", 1)[-1] in ("load", "loads", "Unpickler"):
            bad.append(f"{where}: unpickling runs arbitrary code")
        elif full in ("joblib.load", "pandas.read_pickle", "torch.jit.load"):
            bad.append(f"{where}: pickle-based loader")
        elif full in ("numpy.load", "np.load") and _kw_true(node, "allow_pickle"):
            bad.append(f"{where} with allow_pickle=True")
        elif full in ("yaml.unsafe_load", "yaml.full_load") or (full == "yaml.load" and not any(
                k.arg == "Loader" and "Safe" in _dotted(k.value) for k in node.keywords)):
            bad.append(f"{where}: use yaml.safe_load")
    return bad


def test_no_pickle_based_loading_in_the_project_sources():
    files = [f for d in SOURCES if (REPO / d).is_dir() for f in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 50
    bad = [b for f in files for b in unsafe_loads(f.read_text(), str(f.relative_to(REPO)))]
    assert not bad, "unsafe deserialisation (use safetensors or torch.load(..., weights_only=True)):\n" + "\n".join(bad)


def test_unsafe_load_checker_is_not_vacuous():
    src = ("import torch, pickle\nimport numpy as np\nfrom torch import load as tl\nimport yaml\n"
           "torch.load('a')\ntorch.load('a', weights_only=False)\ntl('a')\npickle.loads(b'')\n"
           "np.load('x', allow_pickle=True)\nyaml.load('x')\n"
           "torch.load('a', weights_only=True)\nnp.load('x')\nyaml.load('x', Loader=yaml.SafeLoader)\n")
    bad = unsafe_loads(src)
    assert [b.split(":")[1].split()[0] for b in bad] == ["5", "6", "7", "8", "9", "10"], bad


# ---- (b) data paths cannot escape their root -------------------------------------------------------

@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "ds"
    (root / "source").mkdir(parents=True)
    (root / "source" / "a.png").write_bytes(b"x")
    (tmp_path / "ds-evil").mkdir()
    (tmp_path / "ds-evil" / "b.png").write_bytes(b"x")
    (tmp_path / "secret.png").write_bytes(b"x")
    (root / "source" / "out.png").symlink_to(tmp_path / "secret.png")       # symlink leaving the root
    (root / "source" / "in.png").symlink_to(root / "source" / "a.png")      # symlink staying inside
    return root


@pytest.mark.parametrize("rel, what", [
    ("/etc/passwd", "absolute"),
    ("C:\\Windows\\win.ini", "absolute"),
    ("../secret.png", "escapes"),
    ("source/../../secret.png", "escapes"),
    ("..\\secret.png", "escapes"),
    ("../ds-evil/b.png", "escapes"),          # a sibling sharing the root's name as a prefix
    ("source/out.png", "escapes"),            # symlink resolved before the check
], ids=["absolute", "windows-drive", "dotdot", "nested-dotdot", "backslash-dotdot", "prefix-sibling",
        "symlink-out"])
def test_dataset_paths_cannot_escape_their_root(tree, rel, what):
    with pytest.raises(FormatError, match=what) as e:
        resolve_in_root(tree, rel, where="meta.json entry 0")
    assert "meta.json entry 0" in str(e.value) and repr(rel) in str(e.value)


def test_paths_inside_the_root_resolve(tree):
    assert resolve_in_root(tree, "source/a.png") == tree.resolve() / "source" / "a.png"
    assert resolve_in_root(tree, "./source/../source/a.png") == tree.resolve() / "source" / "a.png"
    assert resolve_in_root(tree, "source/in.png") == tree.resolve() / "source" / "a.png"


@pytest.mark.parametrize("rel", ["source/out.png", "../ds-evil/b.png", "../secret.png"])
def test_served_paths_cannot_escape_the_served_root(tree, rel):
    with pytest.raises(PathRefused, match="outside the served root"):
        inside_root(tree / rel, tree)
    assert inside_root(tree / "source" / "in.png", tree) == tree.resolve() / "source" / "a.png"


# ---- (c) Label Studio serves local files from the project's data folder only ---------------------

def test_local_files_serving_is_the_project_data_folder(tmp_path):
    server = LabelStudioServer(root=tmp_path, cfg=AnnotationConfig(), token="tok-123456")
    env = server._env(tmp_path / "d")
    assert env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str((tmp_path / "data").resolve())
    assert env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] not in ("/", str(tmp_path.resolve()))
    assert server.status()["local_files_root"] == str((tmp_path / "data").resolve())


@pytest.mark.parametrize("doc_root", ["/", ".", ".rorem", ".rorem/secrets", ".git", "../elsewhere"])
def test_local_files_root_outside_data_is_refused(tmp_path, doc_root):
    """The project root holds .rorem/secrets (the token) and .git: serving it would publish them."""
    root = tmp_path / "proj"
    root.mkdir()
    with pytest.raises(ServerError, match="local-files root"):
        LabelStudioServer(root=root, cfg=AnnotationConfig(), doc_root=root / doc_root)


# ---- (d) the token never appears in exceptions or logs ---------------------------------------------

class _EchoHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request with an error whose body echoes the Authorization header;
    the token starts 280 characters in, across the client's 300-character excerpt of the body."""

    def _answer(self) -> None:
        auth = self.headers.get("Authorization", "")
        status = 401 if "whoami" in self.path else 500
        body = ("x" * 274 + f"{auth}; query {self.path}").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args) -> None:   # keep the test output quiet
        pass


@pytest.fixture
def echo_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _exception_text(e: BaseException) -> str:
    return "".join(traceback.format_exception(e)) + repr(e) + str(getattr(e, "__context__", ""))


def test_token_never_in_exceptions_or_logs(echo_server, caplog):
    caplog.set_level(logging.DEBUG)
    client = LabelStudioClient(echo_server, TOKEN, retries=1, backoff_s=0.0, timeout_s=5)
    calls = [client.whoami, lambda: client.find_project("rorem round 1 review"),
             lambda: client.export_snapshot(1, "t"), lambda: client.import_tasks(1, [{"data": {}}]),
             lambda: client.create_annotation(3, [], completed_by=1)]
    texts = []
    for call in calls:
        with pytest.raises(LabelStudioError) as e:
            call()
        texts.append(_exception_text(e.value))
        assert echo_server in str(e.value)                  # the message still names the server
    assert all(TOKEN not in t and TOKEN[:12] not in t for t in texts), "token (or a prefix) leaked:\n" + texts[0]
    assert "***" in texts[0]                                # the echo was scrubbed, not just cut off
    # httpx/httpcore log every request (DEBUG: header *names* and the request line): no header values
    assert TOKEN not in caplog.text and any(r.name.startswith("httpcore") for r in caplog.records)
    assert TOKEN not in repr(client)


def test_token_not_in_server_repr_or_status(tmp_path):
    server = LabelStudioServer(root=tmp_path, cfg=AnnotationConfig(), token=TOKEN)
    assert server.api_token() == TOKEN
    assert TOKEN not in repr(server) and TOKEN not in json.dumps(server.status())
    assert TOKEN not in repr(server.client())


def test_short_token_error_does_not_echo_it():
    with pytest.raises(LabelStudioError) as e:
        LabelStudioClient("http://127.0.0.1:9", "abc")
    assert "abc" not in str(e.value).replace("characters", "")


# ---- (e) the secret scanner -------------------------------------------------------------------------

def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t", *args],
                   check=True, capture_output=True)


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "proj"
    (root / "logs").mkdir(parents=True)
    (root / "params.yaml").write_text("base:\n  seed: 0\n")
    (root / "logs" / "stage.log").write_text("INFO start\nINFO done\n")
    (root / "data.bin").write_bytes(b"\0\1\2" * 100)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "clean")
    return root


def test_scanner_finds_nothing_in_a_clean_project(project):
    assert find_secrets(project, [TOKEN]) == []


def test_scanner_finds_secrets_in_files_binaries_and_ignored_places(project):
    (project / "logs" / "stage.log").write_text(f"INFO start\nDEBUG header Token {TOKEN}\n")
    (project / "data.bin").write_bytes(b"\0\1" + TOKEN.encode() + b"\0")
    (project / ".rorem" / "prefect").mkdir(parents=True)
    (project / ".rorem" / "prefect" / "db.sqlite").write_bytes(b"SQLite\0" + b"wandb-key-0123456789")
    hits = find_secrets(project, [TOKEN, "wandb-key-0123456789"])
    assert "logs/stage.log: line 2 (secret #1)" in hits
    assert "data.bin: offset 2 (secret #1)" in hits
    assert ".rorem/prefect/db.sqlite: offset 7 (secret #2)" in hits
    assert not any(TOKEN in h for h in hits)


def test_scanner_finds_secrets_in_git_history_even_after_removal(project):
    (project / "params.yaml").write_text(f"base:\n  seed: 0\nannotation:\n  token: {TOKEN}\n")
    _git(project, "commit", "-qam", "oops")
    (project / "params.yaml").write_text("base:\n  seed: 0\n")
    _git(project, "commit", "-qam", "remove the token")
    hits = find_secrets(project, [TOKEN])
    assert any(h.startswith("git commit ") and h.endswith("params.yaml (secret #1)") for h in hits), hits
    assert any(h.startswith("git object ") and "(blob)" in h for h in hits), hits
    assert not any(not h.startswith("git ") for h in hits)   # the working tree is clean


def test_scanner_finds_unreachable_objects_and_commit_messages(project):
    (project / "x.txt").write_text(TOKEN)
    _git(project, "add", "x.txt")
    _git(project, "commit", "-qm", "add x")
    _git(project, "reset", "-q", "--hard", "HEAD~1")       # the commit is now unreachable
    _git(project, "reflog", "expire", "--expire=now", "--all")
    hits = find_secrets(project, [TOKEN])
    assert any("(blob)" in h for h in hits) and not any(h.startswith("git commit") for h in hits), hits
    _git(project, "commit", "-q", "--allow-empty", "-m", f"token {TOKEN}")
    assert any(h.startswith("git commit ") and "(commit message)" in h for h in find_secrets(project, [TOKEN]))


def test_scanner_skips_where_secrets_belong_and_refuses_short_needles(project):
    (project / ".rorem" / "secrets").mkdir(parents=True)
    (project / ".rorem" / "secrets" / "labelstudio_token").write_text(TOKEN)
    assert find_secrets(project, [TOKEN]) == []
    assert find_secrets(project, [TOKEN], exclude=()) == [".rorem/secrets/labelstudio_token: line 1 (secret #1)"]
    with pytest.raises(ValueError, match="shorter"):
        find_secrets(project, ["abc"])


def test_scanner_works_without_git(tmp_path):
    (tmp_path / "a.txt").write_text(f"x\ny\n{TOKEN}\n")
    assert find_secrets(tmp_path, [TOKEN]) == ["a.txt: line 3 (secret #1)"]
