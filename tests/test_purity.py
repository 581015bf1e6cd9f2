"""The core is pure: no clock, randomness, network, event loop, or edge imports."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "exchange"
FORBIDDEN = {"gateway", "asyncio", "time", "random", "socket", "datetime", "threading",
             "uuid", "secrets", "os", "subprocess", "aiomqtt", "uvloop"}
# The core's file edges (order files, the journal) may read and write files, nothing else;
# the journal needs os for fsync and atomic renames.
FILE_EDGES = {"orderfile.py", "journal.py"}
EDGE_IMPORTS = {"journal.py": {"os"}}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_nothing_impure(path):
    bad = _imports(path) & (FORBIDDEN - EDGE_IMPORTS.get(path.name, set()))
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_only_file_edges_open_files(path):
    if path.name in FILE_EDGES:
        return
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    calls = {node.func.id for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert "open" not in calls, f"{path.name} opens files"
    assert "read_bytes" not in source and "write_bytes" not in source


def test_the_checker_catches_a_forbidden_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import time\nfrom gateway.cli import main\n")
    assert _imports(sample) & FORBIDDEN == {"time", "gateway"}
