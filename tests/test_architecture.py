"""Imports point one way: rorem_core <- annotation <- tasks <- flows."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLING = {"tests", "benchmarks"}   # test and benchmark tooling never enters the product
FORBIDDEN = {
    "rorem_core": {"prefect", "label_studio_sdk", "annotation", "tasks", "flows"} | TOOLING,
    "annotation": {"prefect", "tasks", "flows"} | TOOLING,
    "tasks": {"flows"} | TOOLING,
    "flows": TOOLING,
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_one_way(layer):
    bad = {str(f.relative_to(REPO)): sorted(_imports(f) & FORBIDDEN[layer])
           for f in (REPO / layer).rglob("*.py")}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"{layer} imports an outer layer: {bad}"


def test_checker_catches_a_violation(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import prefect\nfrom annotation.client import X\n")
    assert _imports(f) & FORBIDDEN["rorem_core"] == {"prefect", "annotation"}


def test_rorem_core_is_split_by_concern():
    """Modules live in subpackages; only the cross-cutting ones stay at the top (launch: every heavy
    stage's entry point; parallel: the data-parallel sharding that data, reward, rl and stages use)."""
    top = sorted(p.name for p in (REPO / "rorem_core").glob("*.py"))
    assert top == ["__init__.py", "contract.py", "device.py", "io.py", "launch.py", "parallel.py"]
