"""The package's rooms and their order: a lower room never imports a higher one, nothing imports ``cli``, and
docs/architecture.md's module table names every module and nothing else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "isic_monai"
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"data"}),
    frozenset({"transforms", "losses", "metrics", "networks"}),
    frozenset({"bundle"}),
    frozenset({"engines"}),
    frozenset({"results"}),
    frozenset({"cli"}),
)
"""Rooms from low to high; a room may import its own layer and the ones before it."""


def module_name(path: Path) -> str:
    """``isic_monai/engines/resume.py`` -> ``isic_monai.engines.resume`` (a package's ``__init__`` is the package)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def room(module: str) -> str | None:
    """The room of a module (its first name under ``isic_monai``); ``None`` for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def layer(module: str) -> int:
    name = room(module)
    for i, rooms in enumerate(LAYERS):
        if name in rooms:
            return i
    raise AssertionError(f"{module}: room {name!r} is in no layer of tests/test_layering.py")


def imported(path: Path) -> set[str]:
    """Every ``isic_monai`` module a file imports, at module level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("isic_monai")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("isic_monai"):
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    known = package_modules()
    return {n for n in names if n in known}


def test_every_room_is_in_a_layer() -> None:
    rooms = {room(m) for m in package_modules()} - {None}
    assert rooms <= set().union(*LAYERS), rooms - set().union(*LAYERS)
    assert not [p.name for p in PACKAGE.glob("*.py") if p.stem not in {"__init__", *set().union(*LAYERS)}]


@pytest.mark.parametrize("module", sorted(package_modules()))
def test_no_room_imports_a_higher_one(module: str) -> None:
    if room(module) is None:
        assert imported(package_modules()[module]) == set()  # the package root imports nothing of its own
        return
    higher = sorted(m for m in imported(package_modules()[module]) if room(m) and layer(m) > layer(module))
    assert not higher, f"{module} (room {room(module)}) imports higher rooms: {higher}"


def test_nothing_imports_cli() -> None:
    importers = [m for m, p in package_modules().items() if m != "isic_monai.cli" and "isic_monai.cli" in imported(p)]
    assert not importers


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The import reader finds imports inside functions too (the layering test would pass vacuously otherwise)."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from isic_monai.results import scoring\n    import isic_monai.engines.resume\n")
    assert imported(sample) == {"isic_monai.results", "isic_monai.results.scoring", "isic_monai.engines.resume"}


def test_architecture_table_names_every_module() -> None:
    table = set(re.findall(r"^\| `(isic_monai[\w.]*)` \|", ARCHITECTURE.read_text(), flags=re.MULTILINE))
    modules = set(package_modules())
    assert not modules - table, f"missing from docs/architecture.md: {sorted(modules - table)}"
    assert not table - modules, f"docs/architecture.md names modules that are gone: {sorted(table - modules)}"


def test_docs_name_only_tests_that_exist() -> None:
    """Every ``tests/<module>.py::<test>`` a document names is a test function in that module."""
    root = PACKAGE.parent
    named = {(m.group(1), m.group(2), doc.name)
             for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]
             for m in re.finditer(r"tests/(\w+\.py)::(\w+)", doc.read_text())}
    assert named, "no document names a test: the pattern is wrong"
    missing = [f"{doc}: tests/{module}::{name}" for module, name, doc in sorted(named)
               if not (root / "tests" / module).is_file()
               or not re.search(rf"^def {name}\(", (root / "tests" / module).read_text(), re.M)]
    assert not missing, f"documents name tests that do not exist: {missing}"
