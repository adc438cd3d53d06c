"""The package's module graph: no two modules import each other (also through imports inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "isic_monai"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The package modules a file imports (``from pkg import name`` counts as ``pkg.name`` when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m in known}


def test_no_two_modules_import_each_other() -> None:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imported_modules(path, set(files)) - {name} for name, path in files.items()}
    mutual = sorted({tuple(sorted((a, b))) for a, deps in graph.items() for b in deps
                     if a in graph.get(b, set()) and not (a.startswith(b + ".") or b.startswith(a + "."))})
    assert mutual == [], f"modules importing each other: {mutual}"


def test_the_graph_is_read() -> None:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    assert "isic_monai.bundle.checkpoint" in imported_modules(files["isic_monai.bundle.export"], set(files))
