"""Which project files a stage's entry point imports, transitively (static, from the source).

Every ``import`` / ``from ... import`` anywhere in a module counts, function-level ones included (the
stages import heavy modules lazily). ``from pkg import name`` counts ``pkg/name.py`` when that file
exists, and every package ``__init__.py`` on the way is imported too (unless it holds no code).

``python -m tests.helpers.stage_deps`` prints, per dvc.yaml stage, the files its ``deps`` miss.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("rorem_core", "annotation", "tasks", "flows")


def module_file(module: str, root: Path = REPO) -> Path | None:
    """``a.b.c`` -> ``a/b/c.py`` or ``a/b/c/__init__.py`` under ``root``; None if not a project module."""
    if module.split(".")[0] not in PRODUCT:
        return None
    base = root / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_packages(module: str, root: Path) -> list[Path]:
    """The module's file and the ``__init__.py`` of every package above it (all run on import), less
    the files that hold no code (a docstring at most): editing one of those to add code brings it back."""
    parts, out = module.split("."), []
    for i in range(1, len(parts) + 1):
        f = module_file(".".join(parts[:i]), root)
        if f is not None and has_code(f):
            out.append(f)
    return out


def has_code(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def imported_modules(path: Path) -> set[str]:
    """Every module name ``path`` imports (absolute imports; the project uses no relative ones)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)   # submodules imported by name
    return names


def closure(entry_module: str, root: Path = REPO) -> set[Path]:
    """Project files imported, transitively, when ``python -m entry_module`` runs."""
    seen: set[Path] = set()
    todo = _with_packages(entry_module, root)
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for name in imported_modules(f):
            todo.extend(p for p in _with_packages(name, root) if p not in seen)
    return seen


def covered(file: Path, deps: list[str], root: Path = REPO) -> bool:
    """A file is covered by a dep on itself or on a folder above it."""
    rel = file.relative_to(root).as_posix()
    return any(rel == d.rstrip("/") or rel.startswith(d.rstrip("/") + "/") for d in deps)


LAUNCHER = "rorem_core.launch"


def entry_module(cmd: str) -> str | None:
    """``python -m rorem_core.stages.x ...`` (or through the launcher,
    ``python -m rorem_core.launch rorem_core.stages.x ...``) -> ``rorem_core.stages.x``."""
    words = cmd.split()
    if "-m" not in words:
        return None
    mod = words[words.index("-m") + 1]
    return words[words.index(mod) + 1] if mod == LAUNCHER else mod


def entry_closure(cmd: str, root: Path = REPO) -> set[Path]:
    """What ``cmd`` imports: the stage's closure, plus the launcher's when it goes through it."""
    files = closure(entry_module(cmd), root)
    return files | closure(LAUNCHER, root) if f"-m {LAUNCHER} " in " ".join(cmd.split()) + " " else files


def missing_deps(stages: dict[str, tuple[str, list[str]]], root: Path = REPO) -> dict[str, list[str]]:
    """{stage: files its entry point imports that its deps do not cover}; ``stages`` = name -> (cmd, deps)."""
    out = {}
    for name, (cmd, deps) in stages.items():
        mod = entry_module(cmd)
        if mod is None:
            continue
        miss = sorted(f.relative_to(root).as_posix() for f in entry_closure(cmd, root) if not covered(f, deps, root))
        if miss:
            out[name] = miss
    return out


def resolved_stages(project: Path) -> dict[str, tuple[str, list[str]]]:
    """dvc.yaml's stages as DVC resolves them in ``project`` (a git + DVC repo): name -> (cmd, deps)."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return {s.name: (s.cmd, [d.def_path for d in s.deps]) for s in repo.index.stages}


def collapse(files: set[Path], root: Path = REPO) -> list[str]:
    """Files relative to ``root``, a folder in place of its files where every code file in it is listed."""
    rel = {f.relative_to(root).as_posix() for f in files}
    out = set(rel)
    for d in sorted({str(Path(f).parent) for f in rel} - {"rorem_core"}):
        code = {p.relative_to(root).as_posix() for p in (root / d).glob("*.py") if has_code(p)}
        if code and code <= rel:
            out = {f for f in out if not f.startswith(d + "/")} | {d}
    return sorted(out)


def write_deps(dvc_yaml: Path = REPO / "dvc.yaml") -> None:
    """Rewrite the ``rorem_core/`` entries of every stage's deps to its entry point's import closure
    (data and model deps, assets and comments kept)."""
    from io import StringIO

    from ruamel.yaml import YAML

    yml = YAML()
    yml.preserve_quotes, yml.width = True, 4096
    data = yml.load(dvc_yaml.read_text())
    for stage in data["stages"].values():
        body = stage.get("do", stage)
        keep = [d for d in body["deps"] if not str(d).startswith("rorem_core/") or str(d).startswith("rorem_core/assets")]
        want = collapse(entry_closure(" ".join(str(body["cmd"]).split())))
        del body["deps"][:]
        body["deps"].extend(keep + want)
    buf = StringIO()
    yml.dump(data, buf)
    dvc_yaml.write_text(buf.getvalue())


if __name__ == "__main__":   # print what each stage's deps miss (or --write: fix dvc.yaml)
    import shutil
    import subprocess
    import sys
    import tempfile

    if "--write" in sys.argv:
        write_deps()
    with tempfile.TemporaryDirectory() as tmp:
        for f in ("dvc.yaml", "params.yaml"):
            shutil.copy(REPO / f, tmp)
        subprocess.run(["git", "init", "-q"], cwd=tmp, check=True)
        subprocess.run(["dvc", "init", "-q"], cwd=tmp, check=True)
        for name, files in missing_deps(resolved_stages(Path(tmp))).items():
            print(f"{name}:\n  " + "\n  ".join(files))
