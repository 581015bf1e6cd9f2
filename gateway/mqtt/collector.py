"""When the gateway's process runs Python's full garbage collection passes.

CPython's cyclic collector runs a full pass (generation 2) whenever the objects that
survived the younger passes reach a quarter of the long-lived ones. A gateway under a
flood crosses that line several times a second, and each full pass walks every tracked
container, the order book's queues with all their orders among them: 10 to 66 ms with a
quarter of a million resting orders, every bot's answers waiting meanwhile
(benchmarks/fairness.py). Reference counting frees almost everything the exchange
drops; full passes only find cycles, which are rare and small here.

So while the gateway runs, :class:`Collector` takes full passes out of the collector's
own hands and runs them itself: when the gateway has had nothing to do for
``idle_every`` seconds since the last one, and at the latest every ``at_most_every``
seconds, busy or not, so cyclic garbage stays bounded. The objects alive when the
gateway starts (the code, the market, a recovered engine's book) are frozen out of
every pass (:func:`gc.freeze`), so a pass walks only what came since. The younger
passes run as CPython schedules them (about 2 ms each here).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# A generation-2 threshold the collector's count of younger passes never reaches in a
# process's life (one young pass a few ms apart at most): no automatic full pass.
NO_AUTOMATIC_FULL_PASS = 2**30


class Collector:
    """Full collection passes at the gateway's quiet moments, and at least every
    *at_most_every* seconds. ``start`` and ``stop`` bracket the gateway's run."""

    # A full pass took 15-200 ms with the web portal serving twenty pages, 5-130 ms without
    # (benchmarks/web.py, after its floods): an order that comes during one waits it out,
    # so even a quiet gateway runs one at most every 30 s (it was 5 s).
    def __init__(self, *, idle_every: float = 30.0, at_most_every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, collector=gc) -> None:
        if not 0 < idle_every <= at_most_every:
            raise ValueError(f"need 0 < idle_every ({idle_every}) <= at_most_every "
                             f"({at_most_every})")
        self.idle_every = idle_every
        self.at_most_every = at_most_every
        self._clock = clock
        self._gc = collector
        self._saved: tuple[int, ...] | None = None
        self._last = clock()
        self.passes = 0  # full passes run by tick
        self.longest = 0.0  # seconds, the longest of them

    def start(self) -> None:
        """Collect once, freeze what is alive now, and stop automatic full passes."""
        if self._saved is not None:
            return
        collector = self._gc
        collector.collect()
        collector.freeze()
        young, middle, _ = self._saved = collector.get_threshold()
        collector.set_threshold(young, middle, NO_AUTOMATIC_FULL_PASS)
        self._last = self._clock()

    def stop(self) -> None:
        """Give CPython its own thresholds back, and the frozen objects to its passes."""
        if self._saved is not None:
            self._gc.set_threshold(*self._saved)
            self._gc.unfreeze()
            self._saved = None

    def tick(self, idle: bool) -> bool:
        """Run a full pass if one is due: *idle* (nothing waiting to be run or
        published) and ``idle_every`` since the last, or ``at_most_every`` since it in
        any case. Return whether it ran."""
        if self._saved is None:
            return False
        now = self._clock()
        since = now - self._last
        if since < self.idle_every or (not idle and since < self.at_most_every):
            return False
        started = time.perf_counter()
        found = self._gc.collect(2)
        took = time.perf_counter() - started
        self._last = self._clock()
        self.passes += 1
        self.longest = max(self.longest, took)
        log.debug("full collection pass: %d unreachable objects, %.1f ms (%s)", found,
                  took * 1e3, "idle" if idle else "due")
        return True
