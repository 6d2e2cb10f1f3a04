"""The import graph: components never import recipes, and export never imports the registry.

Every import in ``src/mmroute`` is read with ``ast``, function-level imports included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mmroute"
LOWER = ("data", "features", "routers", "evaluation", "tracking", "export", "registry")
RECIPES = ("mmroute.pipeline", "mmroute.cli")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import statement in ``path``."""
    package = ".".join(("mmroute", *path.relative_to(SRC).with_suffix("").parts[:-1]))
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against the file's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            out += [(node.lineno, f"{base}.{a.name}" if base else a.name) for a in node.names]
    return out


def _violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((SRC / package).rglob("*.py")):
        for line, module in _imports(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(SRC.parent)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("package", LOWER)
def test_lower_packages_import_no_pipeline_or_cli(package):
    assert _violations(package, RECIPES) == []


def test_export_imports_nothing_from_the_registry():
    assert _violations("export", ("mmroute.registry",)) == []


def test_the_check_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    fake = tmp_path / "mmroute" / "export"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from ..registry import stages\n    import mmroute.pipeline.runs\n")
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path / "mmroute")
    assert len(_violations("export", ("mmroute.registry", "mmroute.pipeline"))) == 2
