"""The sequencer: the one way commands reach the engine, from every edge.

Replay, ``serve`` (its ``--init`` and the gateway) and the demo all hand their commands
to a ``Sequencer``, which takes each batch through the same steps, in this order:

  1. journal - with a journal, the batch is appended and written as one group before
               any of it acts; its fsync starts, in a thread beside the engine;
  2. run     - the engine runs the commands in order (``Engine.submit``: sequence,
               validate, hold, match, stops, settle);
  3. durable - the batch's fsync is waited for (``durable``): a crash of the machine
               before it loses the batch, but nothing of the batch has been seen;
  4. publish - is the caller's, once ``run`` has returned (it waits in step 3 itself),
               or once ``each`` has given the last command and the caller has called
               ``durable``: nothing is seen before it is on disk;
  5. snapshot - with a journal, when ``snapshot_every`` commands have been journaled
               since the last snapshot, the engine is snapshotted before the next batch
               is journaled (so the snapshot holds exactly the commands journaled).

Pure: the journal writer is the only I/O, and it is given.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exchange.commands import AnyCommand
    from exchange.engine import Engine
    from exchange.events import Event
    from exchange.journal import JournalWriter

__all__ = ["SNAPSHOT_EVERY", "Sequencer"]

SNAPSHOT_EVERY = 500_000  # journaled commands between snapshots


class Sequencer:
    """Journal, then run: every batch of commands, in order, through one engine.

    >>> from exchange import Engine, PlaceOrder, default_market
    >>> sequencer = Sequencer(Engine(default_market()))
    >>> out: list = []
    >>> sequencer.run([PlaceOrder(order_id="s1", account="a", instrument="CEA25",
    ...                           side="sell", price="60.00", qty=100)], out)
    >>> [type(e).__name__ for e in out]
    ['OrderAccepted']
    """

    __slots__ = ("_since_snapshot", "engine", "journal", "snapshot_every")

    def __init__(self, engine: Engine, journal: JournalWriter | None = None, *,
                 snapshot_every: int = SNAPSHOT_EVERY) -> None:
        if snapshot_every <= 0:
            raise ValueError(f"snapshot_every {snapshot_every}: must be more than 0")
        self.engine = engine
        self.journal = journal
        self.snapshot_every = snapshot_every
        self._since_snapshot = 0

    def run(self, commands: Sequence[AnyCommand], out: list[Event]) -> None:
        """Journal and commit *commands*, then run them in order, appending every event
        to *out*."""
        self._journal(commands)
        submit = self.engine.submit
        for command in commands:
            submit(command, out)
        self.durable()

    def durable(self) -> None:
        """Wait until every journaled command is on disk (per the journal's fsync policy);
        raise ``JournalError`` if it cannot be. Nothing a batch did may be published
        before: ``run`` calls it, a caller of ``each`` calls it once it has the last
        command's events."""
        if self.journal is not None:
            self.journal.sync()

    def each(self, commands: Sequence[AnyCommand]) -> Iterator[tuple[AnyCommand, list[Event]]]:
        """Journal and commit *commands*, then run them one at a time, yielding each
        with its events. The list of events is reused: read it before the next step.
        Publish nothing before calling ``durable`` (done here too, past the last)."""
        self._journal(commands)
        submit = self.engine.submit
        out: list[Event] = []
        for command in commands:
            out.clear()  # profiled (benchmarks/gateway.py): one list reused, not one each
            submit(command, out)
            yield command, out
        self.durable()

    def _journal(self, commands: Sequence[AnyCommand]) -> None:
        journal = self.journal
        if journal is None or not commands:
            return
        if self._since_snapshot >= self.snapshot_every:
            # in a forked child: the caller goes on (a 4 s stall at 500,000 orders)
            journal.snapshot(self.engine, background=True)
            self._since_snapshot = 0
        journal.append_many(commands)
        journal.commit(wait=False)  # durable() waits for its fsync, once the batch has run
        self._since_snapshot += len(commands)
