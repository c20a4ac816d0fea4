"""Per-round versioning: freeze the human export as data (``dvc add``), then commit dvc.lock, params
and the ``.dvc`` files, tag ``round-N`` and ``dvc push`` to the default remote (a local folder unless
the repository already names one). ``git checkout round-N && dvc checkout`` restores that round.

Git is touched with explicit pathspecs only (``git commit --only``), so unrelated work that happens
to be staged in the repository is never swept into a round commit.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.dvc import dvc

# what a round commit holds: lineage (dvc.lock), the round list (params.yaml), frozen data (.dvc),
# DVC's .gitignore entries, and small metrics/report files that DVC does not cache
ROUND_PATHS = ("dvc.lock", "params.yaml", "dvc.yaml", ".dvc/config", ":(glob)**/*.dvc", ":(glob)**/.gitignore",
               "results", "reports")
DEFAULT_REMOTE = "rorem-local"   # machine-local default (.dvc/config.local)
SHARED_REMOTE = "rorem"          # a remote named by the user (.dvc/config, committed)


def identity(root: Path) -> list[str]:
    """``-c user.*`` for a machine without a git identity (CI), so the round commit still happens."""
    has = subprocess.run(["git", "config", "user.email"], cwd=root, capture_output=True, text=True).stdout.strip()
    if has or os.environ.get("GIT_COMMITTER_EMAIL"):
        return []
    return ["-c", "user.name=rorem-loop", "-c", "user.email=rorem-loop@localhost"]


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["git", *identity(root), *args], cwd=root, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"`git {' '.join(args)}` in {root} failed (exit {r.returncode}): "
                           f"{(r.stdout + r.stderr).strip()[-2000:]}")
    return r


@task(cache_policy=NO_CACHE)
def freeze_annotations(root: str, n: int) -> str:
    """``dvc add data/annotations/round-n``: the export humans made becomes versioned data."""
    rel = f"data/annotations/round-{n}"
    dvc(Path(root), "add", "-q", rel)
    return f"{rel}.dvc"


def _existing(root: Path, specs: tuple[str, ...]) -> list[str]:
    return [s for s in specs if s.startswith(":(") or (root / s).exists()]


@task(cache_policy=NO_CACHE)
def commit_round(root: str, n: int, message: str) -> str | None:
    """Commit the round's lineage; returns the commit id, or None when nothing changed."""
    r = Path(root)
    specs = _existing(r, ROUND_PATHS)
    git(r, "add", "-A", "--", *specs)
    staged = git(r, "diff", "--cached", "--name-only", "--", *specs).stdout.split()
    if not staged:
        return None
    git(r, "commit", "-q", "-m", message, "--only", "--", *staged)
    return git(r, "rev-parse", "HEAD").stdout.strip()


@task(cache_policy=NO_CACHE)
def tag_round(root: str, n: int, message: str) -> str:
    """``git tag -a round-n`` at HEAD; an existing tag is kept (and reported) when it points elsewhere."""
    r, tag = Path(root), f"round-{n}"
    head = git(r, "rev-parse", "HEAD").stdout.strip()
    have = git(r, "rev-list", "-n", "1", tag, check=False)
    if have.returncode == 0:
        at = have.stdout.strip()
        return tag if at == head else f"{tag} (kept at {at[:10]}; HEAD is {head[:10]})"
    git(r, "tag", "-a", tag, "-m", message)
    return tag


def ensure_remote(root: Path, url: str | None = None) -> str:
    """The DVC remote to push to.

    ``url`` given: remote ``rorem`` in ``.dvc/config`` (committed with the round, so a fresh clone can
    ``dvc pull``). Otherwise the repository's default remote, else ``rorem-local`` = ``.rorem/dvc-remote``
    in the git-ignored ``.dvc/config.local`` (a machine-local folder must not be shared)."""
    if url:
        dvc(root, "remote", "add", "-f", "-d", SHARED_REMOTE, url)
        return SHARED_REMOTE
    got = dvc(root, "remote", "default", check=False)    # exit 1 + "No default remote set" when none
    if got.returncode == 0 and got.stdout.strip():
        return got.stdout.strip()
    dvc(root, "remote", "add", "--local", "-f", "-d", DEFAULT_REMOTE, str((root / ".rorem" / "dvc-remote").resolve()))
    return DEFAULT_REMOTE


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def push_data(root: str, remote_url: str | None = None) -> str:
    """``dvc push`` of everything the workspace references to the default remote (retried: may be network)."""
    r = Path(root)
    name = ensure_remote(r, remote_url)
    out = dvc(r, "push", "-r", name)
    return f"{name}: {(out.stdout + out.stderr).strip().splitlines()[-1:] or ['ok']}"
