"""The core is pure: no clock, randomness, network, event loop, or edge imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "exchange"
FORBIDDEN = {
    "gateway", "asyncio", "time", "random", "socket", "datetime", "threading", "concurrent",
    "uuid", "secrets", "os", "subprocess", "aiomqtt", "uvloop"
}
# The core's file edges (order files, the market file, the journal) may read and write
# files, nothing else; the journal needs os for fsync and atomic renames (and a thread
# for the fsync of a batch, which goes on while the engine runs it), and the market
# reads its time zone from the time zone database (zoneinfo, which speaks datetime) once,
# into a table of offsets, when it is loaded.
FILE_EDGES = {"orderfile.py", "market.py", "journal.py"}
EDGE_IMPORTS = {"journal.py": {"os", "concurrent"}, "market.py": {"datetime"}}
MODULES = sorted(CORE.rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(CORE).as_posix()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_core_module_imports_nothing_impure(path):
    bad = _imports(path) & (FORBIDDEN - EDGE_IMPORTS.get(_name(path), set()))
    assert not bad, f"{_name(path)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_only_file_edges_open_files(path):
    if _name(path) in FILE_EDGES:
        return
    assert _opens_files(path) == set(), f"{_name(path)} opens files"


def _opens_files(path: Path) -> set[str]:
    """The file-opening calls in *path*: ``open(...)`` and ``Path`` reads and writes."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = (func.id if isinstance(func, ast.Name) else
                    (func.attr if isinstance(func, ast.Attribute) else None))
            if name in ("open", "read_text", "write_text", "read_bytes", "write_bytes"):
                found.add(name)
    return found


def test_the_checker_catches_a_file_read(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from pathlib import Path\nPath('x').read_text()\nopen('y')\n")
    assert _opens_files(sample) == {"read_text", "open"}


def test_the_checker_catches_a_forbidden_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import time\nfrom gateway.cli import main\n")
    assert _imports(sample) & FORBIDDEN == {"time", "gateway"}
