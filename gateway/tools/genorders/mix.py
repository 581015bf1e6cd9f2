"""The message kinds (``--mix``): their names, the default shares of each profile, and
parsing ``KIND=SHARE,...``."""

from __future__ import annotations

KINDS = ("limit", "cancel", "amend", "marketable", "market", "ioc", "fok", "stop")
(_LIMIT, _CANCEL, _AMEND, _MARKETABLE, _MARKET, _IOC, _FOK, _STOP) = range(len(KINDS))
# What generate_mixed does (its marketable tenth is 70% gtc, 30% ioc).
MIXED_MIX = {"limit": 70, "cancel": 20, "marketable": 7, "ioc": 3}
CARBON_MIX = {
    "limit": 52,
    "cancel": 20,
    "amend": 10,
    "marketable": 7,
    "market": 3,
    "ioc": 4,
    "fok": 1,
    "stop": 3
}


def parse_mix(text: str) -> dict[str, int]:
    """Return the shares of ``KIND=SHARE,...`` (kinds not named get 0).

    Raise ``ValueError`` naming the problem: not KIND=SHARE, an unknown or repeated
    kind, a share that is not a whole number >= 0, or every share zero.

    >>> parse_mix("limit=60, cancel=40")["cancel"]
    40
    """
    shares = dict.fromkeys(KINDS, 0)
    seen = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        kind, equals, number = (part.strip() for part in item.partition("="))
        if not equals:
            raise ValueError(f"--mix: {item!r} is not KIND=SHARE (e.g. limit=70,cancel=30)")
        if kind not in shares:
            raise ValueError(f"--mix: unknown kind {kind!r}; known: {', '.join(KINDS)}")
        if kind in seen:
            raise ValueError(f"--mix: kind {kind!r} is given twice")
        if not number.isascii() or not number.isdigit():
            raise ValueError(
                f"--mix: the share of {kind!r} must be a whole number >= 0, got {number!r}")
        seen.add(kind)
        shares[kind] = int(number)
    if not any(shares.values()):
        raise ValueError("--mix: every share is zero (or none given); at least one kind "
                         "needs a positive share, e.g. limit=70,cancel=30")
    return shares


def _mix_table(mix: dict[str, int]) -> tuple[list[int], int]:
    """Return the cumulative integer shares in ``KINDS`` order and their total."""
    cumulative, total = [], 0
    for kind in KINDS:
        total += mix.get(kind, 0)
        cumulative.append(total)
    return cumulative, total
