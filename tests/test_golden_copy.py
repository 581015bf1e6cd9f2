"""tests/golden is a copy of shared/golden; it must not drift from the original."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "golden"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "golden"


def test_copy_has_the_three_golden_files():
    for name in ("basic", "rich", "stp"):
        assert (HERE / f"{name}.csv").stat().st_size > 0
        assert (HERE / f"{name}.fills.ndjson").stat().st_size > 0


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared/golden is not beside this checkout")
def test_copy_equals_shared_golden():
    originals = sorted(p.name for p in SHARED.iterdir() if p.suffix in (".csv", ".ndjson"))
    assert originals, "shared/golden holds no order files"
    for name in originals:
        assert (HERE / name).read_bytes() == (SHARED / name).read_bytes(), f"{name} drifted"
