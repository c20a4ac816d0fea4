"""``rorem labelstudio install|up|down|status|add-user``: the managed Label Studio server.

The token is never printed. ``add-user`` reads the password from stdin (``--password-stdin``), a
prompt (TTY), or generates one into ``.rorem/secrets/annotators/<email>`` (mode 600) and prints
that file's path.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import secrets
import sys
from pathlib import Path

from annotation.client import LabelStudioError
from annotation.config import AnnotationConfig
from annotation.server import LabelStudioServer, ServerError, find_project_root

EMAIL = re.compile(r"[^@/\\\s]+@[^@/\\\s]+\.[^@/\\\s]+")


def load_config(root: Path) -> AnnotationConfig:
    """``annotation:`` of ``<root>/params.yaml`` (defaults when the file or section is absent).

    Raises:
        ConfigError: naming the file, the key and the fix (invalid YAML, unknown key, bad value).
    """
    from pydantic import ValidationError

    from rorem_core.config import ConfigError, format_validation_error, load_params

    params = Path(root) / "params.yaml"
    section = (load_params(params).get("annotation") or {}) if params.is_file() else {}
    if not isinstance(section, dict):
        raise ConfigError(f"{params}: [annotation] must be a mapping of keys, found {type(section).__name__}")
    try:
        return AnnotationConfig(**section)
    except ValidationError as e:
        raise ConfigError(format_validation_error("annotation", e, str(params))) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rorem labelstudio", description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, help="project root (default: $ROREM_PROJECT_ROOT or the "
                                             "nearest folder above the cwd with params.yaml or .git)")
    p.add_argument("--port", type=int, help="override annotation.port")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="create .venv-ls with the pinned label-studio (idempotent)")
    sub.add_parser("up", help="start the server (creates the venv and data dir on first use)")
    sub.add_parser("down", help="stop the server")
    st = sub.add_parser("status", help="is it running? (exit 0 yes, 3 no)")
    st.add_argument("--json", action="store_true")
    au = sub.add_parser("add-user", help="create an annotator account that can log in to the UI")
    au.add_argument("email")
    au.add_argument("--first-name", default="")
    au.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    return p


def _password(args: argparse.Namespace, server: LabelStudioServer) -> tuple[str, str]:
    """(password, how it was obtained, for the message)."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n"), "from stdin"
    if sys.stdin.isatty():
        first, again = getpass.getpass("password: "), getpass.getpass("again: ")
        if first != again:
            raise ServerError("the two passwords differ; run add-user again")
        return first, "as typed"
    path = server.secrets / "annotators" / args.email
    path.parent.mkdir(parents=True, exist_ok=True)
    pw = secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pw + "\n")
    return pw, f"generated, stored in {path} (mode 600)"


def main(argv: list[str]) -> int:
    argv = list(argv)
    if argv[:1] == ["labelstudio"]:
        argv = argv[1:]
    args = _parser().parse_args(argv)
    root = (args.root or find_project_root()).resolve()
    from rorem_core.config import ConfigError

    try:
        cfg = load_config(root)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.port:
        cfg = cfg.model_copy(update={"port": args.port})
    server = LabelStudioServer(root=root, cfg=cfg)
    try:
        return _run(args, server)
    except (ServerError, LabelStudioError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, server: LabelStudioServer) -> int:
    if args.command == "install":
        print(f"label-studio ready: {server.ensure_venv()}")
    elif args.command == "up":
        info = server.start()
        print(f"Label Studio {info.get('version', '?')} running at {info['url']} (pid {info['pid']}); "
              f"admin {server.cfg.admin_email} (password in {server.secrets / 'labelstudio_admin_password'}); "
              f"local files served from {info['local_files_root']}")
    elif args.command == "down":
        print("stopped" if server.stop() else "not running")
    elif args.command == "status":
        info = server.status()
        print(json.dumps(info, indent=2) if args.json else
              (f"running at {info['url']} (pid {info['pid']}, version {info.get('version')})"
               if info["running"] else f"not running ({info['url']}); start it with `rorem labelstudio up`"))
        return 0 if info["running"] else 3
    elif args.command == "add-user":
        if not EMAIL.fullmatch(args.email):
            raise ServerError(f"{args.email!r} is not an e-mail address like alice@lab.org")
        if server.status()["running"] is False and not (server.data_dir / "label_studio.sqlite3").is_file():
            raise ServerError("no Label Studio data dir yet; run `rorem labelstudio up` first")
        pw, how = _password(args, server)
        if len(pw) < 8:
            raise ServerError("password shorter than 8 characters; choose a longer one")
        (row,) = server.add_users([{"email": args.email, "password": pw, "first_name": args.first_name}])
        print(f"{'created' if row['created'] else 'updated'} {args.email} (user id {row['id']}); password {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
