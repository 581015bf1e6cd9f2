"""``python -m benchmarks.report RESULT.json``: charts, a Markdown report, a comparison.

Turn one result of ``python -m benchmarks`` into ``report.md`` and three PNG charts, and
compare two results metric by metric, naming the regressions:

* ``throughput.png`` - median msgs/s per contender as horizontal bars, min .. max error
  bars, coloured by group (carbonx, reference, peer), the value and the ratio to the
  engine written on each bar;
* ``latency.png``    - one panel per latency profile: p50, p99 and p99.9 per message kind
  (and all kinds together) as grouped bars in µs on a log scale, the max as a dash;
* ``scaling.png``    - ns per message against resting orders and against instruments
  (both log x), the median as a line over its min .. max band.

``python -m benchmarks.report RESULT.json [--out DIR] [--compare OLD.json]
[--tolerance 0.1]`` writes the report (default folder: ``<RESULT stem>-report`` beside
RESULT); with ``--compare`` it prints the regressions and exits 1 if there is any, else 0.
A missing or unreadable file exits 2 with a one-line message.

Every section of a result may be absent or ``None`` (a failed stage, a quick run, a file
of an older schema): the report says what is missing, the chart of a missing section is
not drawn, and ``compare`` lists a metric found in only one of the two results as
``missing``, never as a regression. Results of schema 1, which have no ``contenders``
section, are read through their ``throughput`` section (engine and plain matcher).

Charts need matplotlib (Agg backend, imported only when drawing, no pyplot state); without
it the report is still written and says the charts were not drawn. The PNGs carry no
timestamp or software version, so the same result gives the same bytes.

Modules, each with one job (they import one another, never this ``__init__``):

* ``result``     - reading a result defensively (sections, contenders, latency profiles,
  scaling points);
* ``text``       - formatting numbers, spreads and Markdown table cells;
* ``comparison`` - ``compare``: two results metric by metric, and its plain-text summary;
* ``markdown``   - the Markdown of ``report.md``, ``headline_table`` and ``targets_table``;
* ``readme``     - ``readme_block`` and ``update_readme``: the README's results block;
* ``charts``     - the three PNG charts (matplotlib, imported only when drawing);
* ``write``      - ``write_report``: report.md and the charts into one folder;
* ``load``       - reading a result file, or a one-line reason why it is not one;
* ``command``    - the command line (``main``), run by ``__main__``.
"""

from __future__ import annotations

from .command import main
from .comparison import compare
from .markdown import headline_table, targets_table
from .readme import readme_block, update_readme
from .write import write_report

__all__ = [
    "write_report", "compare", "headline_table", "targets_table", "readme_block", "update_readme",
    "main"
]
