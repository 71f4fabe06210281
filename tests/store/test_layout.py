"""The store's layout keeps its direction: storage never depends on the worker or the models,
and a session reaches the database only through its store's named interface."""

from __future__ import annotations

import ast
from pathlib import Path

import llm_worker.store

STORE = Path(llm_worker.store.__file__).parent
MODULES = sorted(STORE.glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, relative ones as written (``..worker`` → ``..worker``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if not node.module)
    return names


def test_the_store_imports_neither_a_worker_nor_a_model() -> None:
    for path in MODULES:
        for name in imported_modules(path):
            if name.startswith(("..", "llm_worker")):
                parts = name.lstrip(".").split(".")
                assert "worker" not in parts, (path.name, name)
                assert "models" not in parts, (path.name, name)


def test_a_session_uses_no_private_member_of_anything_but_itself() -> None:
    tree = ast.parse((STORE / "_session.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if node.attr.startswith("__"):
                continue
            assert ast.unparse(node.value) == "self", f"line {node.lineno}: .{node.attr}"


def test_every_private_module_opens_with_its_invariants_and_stays_small() -> None:
    for path in MODULES:
        if path.name == "__init__.py":
            continue
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "Invariants:" in docstring, path.name
        assert len(path.read_text().splitlines()) <= 500, path.name
