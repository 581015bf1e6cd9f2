"""Reading a benchmark result defensively.

Every section may be absent, ``None`` or of the wrong type (a failed stage, a quick run,
a file of an older schema): these accessors return ``None`` or an empty list instead of
raising. Results of schema 1, which have no ``contenders`` section, are read through
their ``throughput`` section (engine and plain matcher).
"""

from __future__ import annotations

import math


def _section(result: dict, key: str) -> dict | None:
    """Return ``result[key]`` if it is a dict, else ``None`` (absent, null, wrong type)."""
    value = result.get(key) if isinstance(result, dict) else None
    return value if isinstance(value, dict) else None


def _number(value) -> int | float | None:
    """Return *value* if it is a finite real number (not a bool), else ``None``.

    >>> _number(3), _number(2.5), _number(True), _number(float("nan")), _number("7")
    (3, 2.5, None, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _median(spread) -> int | float | None:
    return _number(spread.get("median")) if isinstance(spread, dict) else None


def _contenders(result: dict) -> list[dict]:
    """Return the contender rows in display order (schema 1: built from ``throughput``)."""
    section = _section(result, "contenders")
    if section is not None:
        rows = section.get("rows")
        return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []
    legacy = _section(result, "throughput")
    if legacy is None:
        return []
    engine = legacy.get("engine") if isinstance(legacy.get("engine"), dict) else None
    plain = legacy.get("plain") if isinstance(legacy.get("plain"), dict) else None
    agreement = _section(result, "agreement") or {}
    rows = []
    for name, label, group, body in (("engine", "carbonx engine (validation, events, STP)",
                                      "carbonx", engine),
                                     ("plain", "plain matcher (SortedDict + deque)", "reference",
                                      plain)):
        if body is None:
            continue
        row = {
            "name": name,
            "label": label,
            "group": group,
            "msgs_per_s": body.get("msgs_per_s"),
            "trades": body.get("trades"),
            "volume": body.get("volume")
        }
        if name == "plain" and isinstance(agreement.get("ok"), bool):
            row["agrees"] = agreement["ok"]
            row["agreement"] = "identical ordered trade list with stp none"
        rows.append(row)
    engine_median = _median((engine or {}).get("msgs_per_s"))
    for row in rows:
        median = _median(row["msgs_per_s"])
        if engine_median and median is not None:
            row["ratio_to_engine"] = median / engine_median
    return rows


def _ratio_to_engine(row: dict, rows: list[dict]) -> float | None:
    """Return the row's ``ratio_to_engine``, or compute it from the medians."""
    given = _number(row.get("ratio_to_engine"))
    if given is not None:
        return given
    engine = next((r for r in rows if r.get("name") == "engine"), None)
    top, bottom = _median(row.get("msgs_per_s")), _median((engine or {}).get("msgs_per_s"))
    return top / bottom if top is not None and bottom else None


def _profiles(result: dict) -> list[tuple[str, dict, list[tuple[str, dict]]]]:
    """Return ``(profile, body, [(kind, stats), ...])`` per latency profile with kinds.

    The profile's ``all`` summary comes last, as the kind ``all``.
    """
    latency = _section(result, "latency")
    profiles = (latency or {}).get("profiles")
    found = []
    for name, body in profiles.items() if isinstance(profiles, dict) else ():
        if not isinstance(body, dict):
            continue
        kinds = body.get("kinds") if isinstance(body.get("kinds"), dict) else {}
        pairs = [(str(kind), stats) for kind, stats in kinds.items() if isinstance(stats, dict)]
        if isinstance(body.get("all"), dict):
            pairs.append(("all", body["all"]))
        if pairs:
            found.append((str(name), body, pairs))
    return found


def _scaling_points(result: dict, axis: str) -> list[dict]:
    """Return the scaling points along *axis* (``resting`` or ``instruments``), by size."""
    points = (_section(result, "scaling") or {}).get(axis)
    if not isinstance(points, list):
        return []
    usable = [p for p in points if isinstance(p, dict) and (_number(p.get(axis)) or 0) > 0]
    return sorted(usable, key=lambda p: p[axis])


def _commit(result: dict) -> str | None:
    git = (_section(result, "machine") or {}).get("git")
    commit = git.get("commit") if isinstance(git, dict) else None
    return commit if isinstance(commit, str) and commit else None
