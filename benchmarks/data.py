"""Seeded benchmark order files, generated once and cached under ``benchmarks/data/``.

A cached file is reused only while it still matches what the generator would write: its
side file records the generator's source hash, the arguments and the file's own SHA-256,
so a change to any module of ``gateway/tools/genorders/`` or a damaged file means a fresh
generation. Files are written to a temporary name and renamed, so concurrent runs never
read half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from gateway.tools import genorders

__all__ = ["DATA_DIR", "mixed_file", "order_file", "file_sha256"]

DATA_DIR = Path(__file__).resolve().parent / "data"


def file_sha256(path: str | Path) -> str:
    """Return the hex SHA-256 of the file at *path*. O(size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _generator_hash() -> str:
    """Return the generator's source hash: every module of the ``genorders`` package, by
    name and content, so a change to any of them (or a module added or removed) shows."""
    digest = hashlib.sha256()
    for path in sorted(Path(genorders.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def mixed_file(messages: int, *, seed: int = 1, data_dir: str | Path | None = None,
               fund: bool = False) -> dict:
    """Return facts about the cached mixed-profile CSV of *messages* rows, making it if needed.

    The profile is ``gateway.tools.genorders.generate_mixed``: about 70% limit orders near the
    mid, 20% cancels of live orders, 10% marketable orders. With *fund*, the file starts
    with a deposit and an issue row per account, for ``replay --ledger``.
    """
    return order_file("mixed", messages, seed=seed, data_dir=data_dir, fund=fund)


def order_file(profile: str, messages: int, *, seed: int = 1, data_dir: str | Path | None = None,
               fund: bool = False) -> dict:
    """Return facts about the cached CSV of *profile* (``mixed`` or ``carbon``), made if needed.

    The result holds ``path``, ``profile``, ``messages``, ``seed``, ``bytes``, ``sha256``,
    ``generator``, ``cached`` and ``generated_s`` (0 when the cached file was reused).
    """
    folder = Path(data_dir) if data_dir is not None else DATA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stem = {
        "mixed": "funded" if fund else "mixed",
        "carbon": "carbon-funded" if fund else "carbon"
    }[profile]
    path = folder / f"{stem}-{messages}-seed{seed}.csv"
    meta_path = path.with_suffix(".json")
    wanted = {
        "profile": profile,
        "messages": messages,
        "seed": seed,
        "funded": fund,
        "generator": _generator_hash()
    }
    try:
        meta = json.loads(meta_path.read_text())
        if ({
                k: meta.get(k)
                for k in wanted
        } == wanted and path.stat().st_size == meta["bytes"]
                and file_sha256(path) == meta["sha256"]):
            return {"path": str(path), **meta, "cached": True, "generated_s": 0.0}
    except (OSError, ValueError, KeyError):
        pass

    started = time.perf_counter()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    if profile == "carbon":
        rows = genorders.generate_carbon(messages, seed=seed, fund=fund)
        genorders.write_rows(tmp, rows, "csv", genorders.CARBON_HEADER)
    else:
        rows = genorders.generate_mixed(messages, seed=seed, fund=fund)
        genorders.write_rows(tmp, rows, "csv")
    del rows
    os.replace(tmp, path)
    generated = time.perf_counter() - started
    meta = {**wanted, "bytes": path.stat().st_size, "sha256": file_sha256(path)}
    tmp_meta = meta_path.with_name(f"{meta_path.name}.{os.getpid()}.tmp")
    tmp_meta.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp_meta, meta_path)
    return {"path": str(path), **meta, "cached": False, "generated_s": round(generated, 3)}


def unlimited_market() -> str:
    """The default market's TOML without its position limits (``[limits]``): a funded file
    issues an account more allowances than a limit allows, and the runs that replay one
    measure the ledger's cost, not its limits (tests/scenarios/position_limits.txt holds
    those)."""
    from exchange import default_market

    return default_market().without_limits().text
