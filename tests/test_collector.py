"""The gateway's full garbage-collection passes run when it is quiet, or when due."""

from __future__ import annotations

import gc
import weakref

import pytest

from gateway.mqtt.collector import NO_AUTOMATIC_FULL_PASS, Collector


class FakeGc:
    """Records what the collector asks of the gc module."""

    def __init__(self) -> None:
        self.threshold = (700, 10, 10)
        self.calls: list[object] = []

    def collect(self, generation: int = 2) -> int:
        self.calls.append(("collect", generation))
        return 0

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")

    def get_threshold(self) -> tuple[int, int, int]:
        return self.threshold

    def set_threshold(self, *threshold: int) -> None:
        self.threshold = threshold


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_start_freezes_the_living_and_stops_automatic_full_passes_and_stop_undoes_it():
    fake, clock = FakeGc(), Clock()
    collector = Collector(collector=fake, clock=clock)
    collector.start()
    assert fake.calls == [("collect", 2), "freeze"]
    assert fake.threshold == (700, 10, NO_AUTOMATIC_FULL_PASS)
    collector.stop()
    assert fake.threshold == (700, 10, 10) and fake.calls[-1] == "unfreeze"


def test_a_full_pass_runs_when_idle_after_idle_every_and_when_busy_after_at_most_every():
    fake, clock = FakeGc(), Clock()
    collector = Collector(idle_every=5, at_most_every=60, collector=fake, clock=clock)
    assert not collector.tick(idle=True)  # not started: CPython's own passes run
    collector.start()
    fake.calls.clear()
    clock.now += 4.9
    assert not collector.tick(idle=True)  # idle, but one ran (at start) 4.9 s ago
    clock.now += 0.2
    assert collector.tick(idle=True) and fake.calls == [("collect", 2)]
    clock.now += 59
    assert not collector.tick(idle=False)  # busy: waits for a quiet moment ...
    clock.now += 1.5
    assert collector.tick(idle=False)  # ... at most 60 s
    assert collector.passes == 2 and fake.calls == [("collect", 2)] * 2
    clock.now += 10
    assert not collector.tick(idle=False)
    assert collector.tick(idle=True)


def test_bad_periods_are_refused():
    with pytest.raises(ValueError, match="idle_every"):
        Collector(idle_every=0)
    with pytest.raises(ValueError, match="idle_every"):
        Collector(idle_every=10, at_most_every=5)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_with_the_real_collector_an_old_cycle_waits_for_the_due_pass_which_frees_it():
    clock = Clock()
    collector = Collector(idle_every=1, at_most_every=2, clock=clock)
    collector.start()
    try:
        assert gc.get_threshold()[2] == NO_AUTOMATIC_FULL_PASS
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: reference counting alone never frees it
        gone = weakref.ref(a)
        gc.collect(1)  # survives the young passes: now in the oldest generation
        del a, b
        gc.collect(0)
        gc.collect(1)
        assert gone() is not None  # only a full pass finds it
        clock.now += 2
        assert collector.tick(idle=False)
        assert gone() is None
    finally:
        collector.stop()
    assert gc.get_threshold()[2] != NO_AUTOMATIC_FULL_PASS
