"""``carbonx gen-orders``: seeded order files in the pinned format.

Profiles:

- ``mixed`` (the default), ``generate_mixed``: about 70% limit orders resting near the
  mid, 20% cancels of live orders, 10% marketable orders (limits through the touch, some
  ioc), one price scale (60.00), no timestamps. Its output for given arguments is frozen:
  cached benchmark data and tests depend on it byte for byte. Given ``--mix`` or the
  geometric depth shape, the same market runs through ``generate_kinds`` instead.
- ``carbon``, ``generate_carbon``: a compliance year of the national carbon market.
  Trading days Mon-Fri up to the deadline (31 December by default; the 2025 exchange
  holidays are left out), ``ts`` inside the listing hours 09:30-11:30 and 13:00-15:00, an
  ``eod`` row closing each trading day that has messages; covered entities ``ent0001``...
  of unequal activity and market makers ``mm01``... quoting both sides close to the mid
  and re-quoting by amend and cancel; CEA vintages and CCER (cheaper), each with its own
  mid. A quiet year and a heavy last quarter before the deadline (about 75% of the
  year's traded volume), and bursts after the open (09:30) and the re-open (13:00).

Message kinds (``--mix``, shares normalised): ``limit`` (passive, rests near the mid
without crossing), ``cancel`` and ``amend`` (of a live order), ``marketable`` (a limit
through the touch), ``market``, ``ioc`` and ``fok`` (limits through the touch with that
tif) and ``stop`` (``stop`` or ``stop_limit``, its stop price beyond the last price).

Every generator runs the engine alongside, so each cancel and amend names an order live
at that moment, prices stay on the tick and inside the price band, and quantities
inside the instrument's minimum, maximum and step: a replay rejects nothing.
``--depth-ticks`` goes up to ``flow.MAX_DEPTH_TICKS`` (3000, 30.00): about half the lowest
starting mid, so prices stay positive (the mixed profile's mid never walks so low that
one would not; the others move a price beyond the band, or below 0.01, onto its edge).

Timestamps (carbon): engine time, integer nanoseconds since the epoch, UTC (09:30
Beijing time is ``...T01:30:00Z``, at the default market's UTC offset of the day, which
was +09:00 in the summers of 1986-1991). An ``eod`` row's ``ts`` is 15:00 of its day.
A deadline runs from 1970-12-31 (a year from 1970-01-01: no negative ``ts``) to
2262-04-11 (the last eod within 64-bit nanoseconds): ``deadline_problem``.

Funding (``fund``): the file starts with a ``deposit`` row and ``issue`` rows for every
account (they count among the messages), enough that ``replay --ledger`` refuses nothing
for want of cash or allowances. The mixed profiles give every account fixed amounts; the
carbon profile sizes each account's funding from its own orders (every buy held in full
at its limit, or the band's top for market and stop buys, plus fees; every sell and
every amend counted), an upper bound, so no order of the file can run short.

Determinism: one ``random.Random(seed)`` and integer or IEEE-exact arithmetic only
(no libm functions), so the same arguments and seed give the same file, byte for byte,
in CSV and NDJSON. Cost: O(messages) draws plus the engine's own work, 10-15 us a row.

Known limits: the last quarter's volume share is aimed, not exact (its size factor is
calibrated on measured replays; about +-0.03 at 20,000 rows, +-0.01 at a million); the
holiday list covers 2025 only; market makers open as covered accounts (the file has no
``open_account`` rows); the mixed profiles with a future and ``--fund`` give orders a
ledger refuses (futures are not cleared yet).

Modules, each with one job (they import one another, never this ``__init__``):

- ``rows``     - the headers, reading a row back as a replay would, CSV and NDJSON writing;
- ``mix``      - the message kinds, each profile's default shares, ``parse_mix``;
- ``flow``     - the message maker behind ``generate_kinds`` and ``generate_carbon``;
- ``mixed``    - the mixed profile: ``generate_mixed`` and ``generate_kinds``;
- ``schedule`` - the carbon profile's calendar: trading days, messages per day, instants;
- ``carbon``   - the carbon profile: ``generate_carbon`` and its funding rows;
- ``command``  - ``DESCRIPTION``, ``add_arguments`` and ``run`` for ``carbonx gen-orders``.
"""

from __future__ import annotations

from .carbon import generate_carbon
from .command import DESCRIPTION, add_arguments, run
from .mix import CARBON_MIX, KINDS, MIXED_MIX, parse_mix
from .mixed import generate_kinds, generate_mixed
from .rows import CARBON_HEADER, HEADER, KINDS_HEADER, write_rows
from .schedule import HOLIDAYS as HOLIDAYS  # not in __all__, but callers import it
from .schedule import trading_days

__all__ = [
    "DESCRIPTION", "add_arguments", "run", "generate_mixed", "generate_kinds", "generate_carbon",
    "parse_mix", "trading_days", "write_rows", "KINDS", "HEADER", "KINDS_HEADER", "CARBON_HEADER",
    "MIXED_MIX", "CARBON_MIX"
]
