"""benchmarks.report: the Markdown report, its charts, and the comparison of two results.

Everything runs on a synthetic result in the shape the suite writes (no benchmark is
run), so these tests are fast and say nothing about speed.
"""

from __future__ import annotations

import copy
import doctest
import importlib
import json
import pkgutil
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.report.markdown import _throughput_lines

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _spread(median: float, low: float, high: float, n: int = 5) -> dict:
    return {"median": median, "min": low, "max": high, "n": n}


def _latency_stats(n: int, p50: int, p99: int, p999: int, top: int) -> dict:
    return {
        "n": n,
        "p50_ns": p50,
        "p99_ns": p99,
        "p999_ns": p999,
        "max_ns": top,
        "mean_ns": p50 * 1.2
    }


def _profile(file: str, scale: int) -> dict:
    kinds = {
        "new_limit_rest": _latency_stats(7000, 2100 * scale, 12345 * scale, 40000 * scale,
                                         90000 * scale),
        "cancel": _latency_stats(2000, 1500 * scale, 8000 * scale, 21000 * scale, 50000 * scale),
        "marketable": _latency_stats(1000, 4000 * scale, 30000 * scale, 80000 * scale,
                                     120000 * scale)
    }
    edges = [0, 1000, 2000, 5000, 10000, 50000]
    counts = {kind: [0, 100, 500, 300, 90, 10] for kind in kinds}
    counts["all"] = [0, 300, 1500, 900, 270, 30]
    return {
        "file": file,
        "messages": 1_000_000,
        "sampled": 10_000,
        "kinds": kinds,
        "all": _latency_stats(10000, 2000 * scale, 15000 * scale, 50000 * scale, 120000 * scale),
        "histogram": {
            "edges_ns": edges,
            "counts": counts
        }
    }


def make_result() -> dict:
    """Return a full result of the new schema, with made-up but plausible numbers."""
    return {
        "schema": 2,
        "suite": "carbonx benchmarks",
        "mode": "full",
        "created_utc": "2026-11-24T18:47:13+00:00",
        "machine": {
            "python": "3.11.7",
            "implementation": "CPython",
            "platform": "Linux-x86_64",
            "cpu": "AMD EPYC",
            "cpu_count": 2,
            "packages": {
                "carbonx": "0.1.0",
                "msgspec": "0.22.0"
            },
            "git": {
                "commit": "7c7fe4fbd97b00b30b1f9d18d6c7dd3348f2309d",
                "uncommitted_changes": []
            }
        },
        "settings": {
            "messages": 1_000_000,
            "seed": 1,
            "repeat": 5
        },
        "contenders": {
            "file": "benchmarks/data/mixed-1000000-seed1.csv",
            "messages": 1_000_000,
            "repeat": 5,
            "rows": [{
                "name": "engine",
                "label": "carbonx engine, matching only",
                "group": "carbonx",
                "version": "0.1.0",
                "msgs_per_s": _spread(428905.0, 425909.0, 429948.0),
                "runs_s": [2.33, 2.32, 2.33, 2.34, 2.33],
                "ratio_to_engine": 1.0,
                "messages_sent": 1_000_000,
                "left_out": {},
                "emulated": {},
                "trades": 524153,
                "volume": 65988901,
                "agrees": True,
                "agreement": "identical ordered trade list",
                "note": ""
            }, {
                "name": "plain",
                "label": "plain matcher",
                "group": "reference",
                "version": "0.1.0",
                "msgs_per_s": _spread(786602.0, 781356.0, 794057.0),
                "runs_s": [1.27] * 5,
                "ratio_to_engine": 1.834,
                "messages_sent": 1_000_000,
                "left_out": {},
                "emulated": {},
                "trades": 534820,
                "volume": 67115153,
                "agrees": True,
                "agreement": "identical ordered trade list",
                "note": ""
            }, {
                "name": "peerbook",
                "label": "peerbook | C extension",
                "group": "peer",
                "version": "2.1",
                "msgs_per_s": _spread(1_250_000.0, 1_200_000.0, 1_300_000.0),
                "runs_s": [0.79] * 5,
                "ratio_to_engine": 2.914,
                "messages_sent": 999_988,
                "left_out": {
                    "amend": 12
                },
                "emulated": {
                    "ioc": "limit then cancel of the remainder"
                },
                "trades": 534700,
                "volume": 67100000,
                "agrees": None,
                "agreement": "same trade count, order not comparable",
                "note": "no self-trade prevention"
            }]
        },
        "latency": {
            "sample_every": 100,
            "timer_overhead_ns": 42,
            "profiles": {
                "mixed": _profile("benchmarks/data/mixed.csv", 1),
                "carbon": _profile("benchmarks/data/carbon.csv", 2)
            }
        },
        "scaling": {
            "messages": 100_000,
            "resting": [{
                "resting": size,
                "ns_per_msg": _spread(2300.0 + i * 150, 2250.0 + i * 150, 2400.0 + i * 150),
                "bytes_per_order": 310.0 + i
            } for i, size in enumerate((1000, 10_000, 100_000, 1_000_000))],
            "instruments": [{
                "instruments": count,
                "ns_per_msg": _spread(2300.0 + i * 40, 2280.0 + i * 40, 2350.0 + i * 40)
            } for i, count in enumerate((1, 10, 100, 1000))],
            "resting_ratio_largest_to_smallest": 1.196,
            "instruments_ratio_largest_to_smallest": 1.052
        },
        "targets": {
            "engine_over_plain_at_least": 0.5,
            "end_to_end_msgs_per_s_above": 300000
        },
        "verdict": {
            "targets": [{
                "name": "engine over plain",
                "target": ">= 0.5",
                "value": 0.5453,
                "met": True
            }, {
                "name": "end to end msgs/s",
                "target": "> 300,000",
                "value": 290239.0,
                "met": False
            }]
        },
        "end_to_end": {
            "msgs_per_s": _spread(290239, 273062, 295048),
            "engine_msgs_per_s": _spread(443582, 434701, 445200),
            "matches_in_process_engine": True
        },
        "ledger": {
            "modes": {
                "matching": {
                    "msgs_per_s": _spread(279765, 277373, 285372)
                }
            },
            "ratios": {
                "ledger_over_matching": _spread(0.618, 0.598, 0.65),
                "journal_over_matching": _spread(0.504, 0.491, 0.516)
            }
        },
        "memory": {
            "orders": 1_000_000,
            "instruments": ["CEA24", "CEA25"],
            "levels_per_side": 1000,
            "engine": {
                "tracemalloc": {
                    "bytes_per_order": 316.9
                },
                "rss": {
                    "bytes_per_order": 342.0
                }
            },
            "plain": {
                "tracemalloc": {
                    "bytes_per_order": 226.1
                },
                "rss": None
            }
        },
        "failures": [],
        "ok": True
    }


@pytest.fixture
def result() -> dict:
    return make_result()


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> dict[str, Path]:
    """The report of the full synthetic result, written once for the module."""
    pytest.importorskip("matplotlib")
    return report.write_report(make_result(), tmp_path_factory.mktemp("report"))


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Return the ``(type, payload)`` chunks of a PNG, checking its signature and CRCs."""
    assert data.startswith(PNG_SIGNATURE)
    chunks, at = [], len(PNG_SIGNATURE)
    while at < len(data):
        (length, ) = struct.unpack(">I", data[at:at + 4])
        kind, payload = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        (crc, ) = struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        assert crc == zlib.crc32(kind + payload), kind
        chunks.append((kind, payload))
        at += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    return chunks


def _metric(compared: dict, name: str) -> dict:
    (row, ) = [r for r in compared["metrics"] if r["metric"] == name]
    return row


def _cells(line: str) -> list[str]:
    """Split a Markdown table row on its unescaped pipes."""
    assert line.startswith("|") and line.endswith("|"), line
    return [c.strip() for c in re.split(r"(?<!\\)\|", line[1:-1])]


# --- the report and its charts ------------------------------------------------------------


def test_report_and_three_charts_are_written(full_report):
    assert set(full_report) == {"report", "throughput", "latency", "scaling"}
    for name in ("throughput", "latency", "scaling"):
        data = full_report[name].read_bytes()
        assert full_report[name].name == f"{name}.png" and len(data) > 5000, name
        chunks = _png_chunks(data)
        kinds = {kind for kind, _ in chunks}
        assert b"IDAT" in kinds and b"tIME" not in kinds, name
        text_keys = {payload.split(b"\0")[0] for kind, payload in chunks if kind == b"tEXt"}
        assert b"Software" not in text_keys, name  # no version stamp: same result, same bytes
    from matplotlib.image import imread

    height, width = imread(full_report["throughput"]).shape[:2]
    assert width > 600 and height > 200


def test_report_has_headline_rows_targets_and_tables(full_report):
    text = full_report["report"].read_text()
    assert text.startswith("# carbonx benchmarks: full run, 2026-11-24")
    assert "commit 7c7fe4fbd97b" in text and "AMD EPYC" in text
    assert (
        "| carbonx engine, matching only 0.1.0 | carbonx | 428,905 [425,909 .. 429,948] | 1.000x | 524,153 |"
        in text)
    assert "| plain matcher 0.1.0 | reference | 786,602 [781,356 .. 794,057] | 1.834x |" in text
    assert "peerbook \\| C extension" in text  # a pipe in a label is escaped
    assert "left out: amend 12; emulated: ioc (limit then cancel of the remainder)" in text
    assert "| engine over plain | >= 0.5 | 0.545 | met |" in text
    assert "| end to end msgs/s | > 300,000 | 290,239 | **missed** |" in text
    assert ("| new_limit_rest | 7,000 | 2.10 | 12.35 | 40.00 | 90.00 | 2.52 |"
            in text)  # µs, 2 decimals
    assert "### Profile `carbon`" in text
    assert "| 1,000,000 | 2,750 [2,700 .. 2,850] | 313.0 |" in text
    assert "| engine | 316.9 | 342.0 |" in text and "| plain | 226.1 | - |" in text
    for chart in ("throughput", "latency", "scaling"):
        assert f"]({chart}.png)" in text
    assert "python -m benchmarks --quick" in text
    assert "python -m benchmarks.report benchmarks/results/latest.json --compare OLD.json" in text
    assert "Compared with the previous run" not in text


def test_charts_are_deterministic(full_report, tmp_path):
    again = report.write_report(make_result(), tmp_path)
    for name in ("throughput", "latency", "scaling"):
        assert again[name].read_bytes() == full_report[name].read_bytes(), name
    assert again["report"].read_text() == full_report["report"].read_text()


@pytest.mark.parametrize("section, how", [("contenders", "none"), ("latency", "none"),
                                          ("scaling", "none"), ("latency", "absent")])
def test_a_missing_section_skips_its_chart_and_says_so(result, tmp_path, section, how):
    pytest.importorskip("matplotlib")
    chart = {"contenders": "throughput"}.get(section, section)
    (tmp_path / f"{chart}.png").write_bytes(b"stale chart of an earlier run")
    if how == "none":
        result[section] = None
    else:
        del result[section]
    paths = report.write_report(result, tmp_path)
    assert chart not in paths and not (tmp_path / f"{chart}.png").exists()
    others = {"throughput", "latency", "scaling"} - {chart}
    assert others <= set(paths)
    text = paths["report"].read_text()
    assert f"No {section} section in this result: {chart} chart skipped." in text
    assert f"]({chart}.png)" not in text


def test_a_result_of_the_older_schema_still_reports(tmp_path):
    old = {
        "schema": 1,
        "mode": "full",
        "throughput": {
            "engine": {
                "msgs_per_s": _spread(428905, 425909, 429948),
                "trades": 524153
            },
            "plain": {
                "msgs_per_s": _spread(786602, 781356, 794057)
            }
        },
        "agreement": {
            "ok": True
        },
        "end_to_end": None,
        "memory": None,
        "verdict": {
            "engine_over_plain": 0.5426
        }
    }
    paths = report.write_report(old, tmp_path)
    text = paths["report"].read_text()
    assert "older schema" in text
    assert (
        "| carbonx engine (validation, events, STP) | carbonx | 428,905 [425,909 .. 429,948] | 1.000x | 524,153 |"
        in text)
    assert "| 1.834x |" in text
    assert "latency" not in paths and "scaling" not in paths


def test_empty_sections_do_not_crash(tmp_path):
    bare = {
        "mode": "quick",
        "contenders": {
            "rows": []
        },
        "latency": {
            "profiles": {}
        },
        "scaling": {
            "resting": [],
            "instruments": None
        },
        "verdict": None,
        "machine": None,
        "settings": None
    }
    paths = report.write_report(bare, tmp_path)
    assert set(paths) == {"report"}
    text = paths["report"].read_text()
    assert text.count("chart skipped") == 3 and "No targets in this result" in text


# --- compare ------------------------------------------------------------------------------


def test_compare_names_regressions_improvements_and_same(result):
    new = copy.deepcopy(result)
    rows = {row["name"]: row for row in new["contenders"]["rows"]}
    rows["engine"]["msgs_per_s"]["median"] *= 0.8  # 20% slower
    rows["plain"]["msgs_per_s"]["median"] *= 1.05  # within 10%
    kinds = new["latency"]["profiles"]["mixed"]["kinds"]
    # latency tails have the wider latency tolerance (50%)
    kinds["new_limit_rest"]["p99_ns"] = int(kinds["new_limit_rest"]["p99_ns"] * 1.6)  # worse
    kinds["cancel"]["p99_ns"] = int(kinds["cancel"]["p99_ns"] * 0.4)  # better
    kinds["marketable"]["p99_ns"] = int(kinds["marketable"]["p99_ns"] * 1.2)  # same

    found = report.compare(result, new)

    engine = _metric(found, "throughput/engine msgs/s")
    assert engine["status"] == "regression" and engine["better"] == "higher"
    assert engine["change"] == pytest.approx(-0.2)
    rest = _metric(found, "latency/mixed/new_limit_rest p99 ns")
    assert rest["status"] == "regression" and rest["better"] == "lower"
    assert rest["change"] == pytest.approx(-0.6, abs=1e-4)
    cancel = _metric(found, "latency/mixed/cancel p99 ns")
    assert cancel["status"] == "improvement" and cancel["change"] == pytest.approx(0.6, abs=1e-4)
    assert _metric(found, "throughput/plain msgs/s")["status"] == "same"
    assert _metric(found, "latency/mixed/marketable p99 ns")["status"] == "same"
    assert _metric(found, "scaling/resting 1,000,000 ns/msg")["status"] == "same"
    assert sorted(found["regressions"]) == [
        "latency/mixed/new_limit_rest p99 ns", "throughput/engine msgs/s"
    ]
    assert found["improvements"] == ["latency/mixed/cancel p99 ns"]
    assert found["tolerance"] == 0.10
    assert found["old"] == {
        "created_utc": "2026-11-24T18:47:13+00:00",
        "commit": "7c7fe4fbd97b00b30b1f9d18d6c7dd3348f2309d",
        "mode": "full",
        "messages": 1_000_000
    }

    # A wider tolerance forgives the same changes.
    assert report.compare(result, new, tolerance=0.25, latency_tolerance=0.7)["regressions"] == []


def test_compare_covers_every_kind_of_metric(result):
    names = {row["metric"] for row in report.compare(result, result)["metrics"]}
    assert {
        "throughput/engine msgs/s", "throughput/peerbook msgs/s", "latency/carbon/all p99.9 ns",
        "latency/mixed/cancel p99.9 ns", "scaling/resting 1,000 ns/msg",
        "scaling/resting 1,000,000 bytes/order", "scaling/instruments 1,000 ns/msg",
        "memory/engine bytes/order (tracemalloc)", "end_to_end/replay msgs/s",
        "ledger/ledger_over_matching", "ledger/journal_over_matching"
    } <= names
    assert "memory/plain bytes/order (rss)" not in names  # null in the result
    assert all(r["status"] == "same" and r["change"] == 0
               for r in report.compare(result, result)["metrics"])


def test_metrics_in_only_one_result_are_missing_not_regressions(result):
    new = copy.deepcopy(result)
    new["contenders"]["rows"].pop()  # peerbook not run
    new["latency"] = None  # stage failed
    new["scaling"]["resting"].append({
        "resting": 10_000_000,
        "ns_per_msg": _spread(5000.0, 4900.0, 5100.0)
    })
    found = report.compare(result, new)
    peer = _metric(found, "throughput/peerbook msgs/s")
    assert peer["status"] == "missing" and peer["new"] is None and peer["old"] == 1_250_000.0
    added = _metric(found, "scaling/resting 10,000,000 ns/msg")
    assert added["status"] == "missing" and added["old"] is None and added["new"] == 5000.0
    assert _metric(found, "latency/mixed/all p99 ns")["status"] == "missing"
    assert found["regressions"] == [] and found["improvements"] == []


def test_compare_reads_an_older_schema(result):
    old = {
        "schema": 1,
        "created_utc": "2026-11-01T00:00:00+00:00",
        "throughput": {
            "engine": {
                "msgs_per_s": _spread(600000, 590000, 610000)
            },
            "plain": {
                "msgs_per_s": _spread(786602, 781356, 794057)
            }
        },
        "end_to_end": {
            "msgs_per_s": _spread(290239, 273062, 295048)
        }
    }
    found = report.compare(old, result)
    assert found["old"] == {
        "created_utc": "2026-11-01T00:00:00+00:00",
        "commit": None,
        "mode": None,
        "messages": None
    }
    assert found["regressions"] == ["throughput/engine msgs/s"]  # 600,000 -> 428,905
    assert _metric(found, "end_to_end/replay msgs/s")["status"] == "same"
    assert _metric(found, "latency/mixed/all p99 ns")["status"] == "missing"


def test_compare_rejects_a_negative_tolerance(result):
    with pytest.raises(ValueError):
        report.compare(result, result, tolerance=-0.1)


def test_the_report_lists_the_comparison(result, tmp_path):
    new = copy.deepcopy(result)
    new["contenders"]["rows"][0]["msgs_per_s"]["median"] = 343124.0
    new["latency"] = new["scaling"] = None  # keep this test quick
    new["contenders"]["rows"].pop()
    paths = report.write_report(new, tmp_path, compared=report.compare(result, new))
    text = paths["report"].read_text()
    assert "## Compared with the previous run" in text
    assert "Previous run: 2026-11-24 18:47:13 UTC, commit 7c7fe4fbd97b." in text
    assert "**Regressions: 1**" in text
    assert "| throughput/engine msgs/s | 428,905 | 343,124 | -20.0% | higher |" in text
    assert "**Improvements: 0**" in text
    assert "`throughput/peerbook msgs/s` (old only)" in text


def test_a_quick_run_compared_with_a_full_one_is_flagged(result, tmp_path, capsys):
    old = _write(tmp_path / "old.json", _light(copy.deepcopy(result)))
    result["mode"], result["settings"]["messages"] = "quick", 50_000
    new = _write(tmp_path / "new.json", _light(result))
    assert report.main([str(new), "--compare", str(old)]) == 0
    assert ("warning: the two runs are not alike (mode full -> quick; messages 1,000,000 -> "
            "50,000)" in capsys.readouterr().out)
    assert ("**Warning:** the two runs are not alike"
            in (tmp_path / "new-report" / "report.md").read_text())


def test_run_counts_and_prefix_runs_are_stated(result):
    rows = result["contenders"]["rows"]
    rows[2]["msgs_per_s"]["n"] = 3
    rows.append({
        "name": "naive",
        "label": "NaiveBook reference",
        "group": "reference",
        "prefix": 10_000,
        "msgs_per_s": _spread(5000.0, 4900.0, 5100.0, 3)
    })
    table = report.headline_table(result)
    assert "first 10,000 messages only" in table.splitlines()[-1]
    text = "\n".join(_throughput_lines(result, {}, {}))
    assert "median [min .. max] of runs: 5 (engine, plain), 3 (peerbook, naive);" in text


# --- headline table -----------------------------------------------------------------------


def test_headline_table_is_a_markdown_table_with_one_row_per_contender(result):
    lines = report.headline_table(result).splitlines()
    header, rule, *rows = lines
    width = len(_cells(header))
    assert width == 7 and _cells(header)[0] == "contender"
    assert re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", rule) and len(_cells(rule)) == width
    assert len(rows) == 3 and all(len(_cells(row)) == width for row in rows)
    assert [_cells(row)[0] for row in rows] == [
        "carbonx engine, matching only 0.1.0", "plain matcher 0.1.0", "peerbook \\| C extension 2.1"
    ]
    assert report.headline_table({"contenders": None}) == ""


def test_doctests():
    """Every module of the package: the names ``report`` re-exports are defined in them."""
    names = [m.name for m in pkgutil.iter_modules(report.__path__) if m.name != "__main__"]
    results = [doctest.testmod(importlib.import_module(f"{report.__name__}.{n}")) for n in names]
    assert sum(r.failed for r in results) == 0 and sum(r.attempted for r in results) > 0


# --- command line -------------------------------------------------------------------------


def _write(path: Path, result: dict) -> Path:
    path.write_text(json.dumps(result))
    return path


def _light(result: dict) -> dict:
    """The result without its chart sections, so a CLI test draws a single chart."""
    result["latency"] = result["scaling"] = None
    return result


def test_cli_exits_1_on_a_regression(result, tmp_path, capsys):
    old = _write(tmp_path / "old.json", _light(copy.deepcopy(result)))
    result["contenders"]["rows"][0]["msgs_per_s"]["median"] *= 0.8
    new = _write(tmp_path / "new.json", _light(result))
    assert report.main([str(new), "--out", str(tmp_path / "out"), "--compare", str(old)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION  throughput/engine msgs/s: 428,905 -> 343,124 (-20.0%" in out
    assert "1 regression" in out
    assert "Compared with the previous run" in (tmp_path / "out" / "report.md").read_text()


def test_cli_exits_0_without_regression(result, tmp_path, capsys):
    old = _write(tmp_path / "old.json", _light(copy.deepcopy(result)))
    result["contenders"]["rows"][0]["msgs_per_s"]["median"] *= 1.05
    new = _write(tmp_path / "new.json", _light(result))
    assert report.main([str(new), "--compare", str(old), "--tolerance", "0.1"]) == 0
    assert "0 regression" in capsys.readouterr().out
    assert (tmp_path / "new-report" / "report.md").exists()  # the default --out


def test_cli_bad_files_exit_2_with_a_message(result, tmp_path, capsys):
    good = _write(tmp_path / "good.json", _light(result))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "other.json").write_text('{"settings": {"bots": 4}, "gateway": {}}')
    for argv, words in (([str(tmp_path / "missing.json")],
                         "no such file"), ([str(good), "--compare",
                                            str(tmp_path / "missing.json")], "no such file"),
                        ([str(tmp_path / "broken.json")], "not valid JSON"),
                        ([str(tmp_path / "list.json")], "not a benchmark result"),
                        ([str(tmp_path / "other.json")],
                         "not a carbonx benchmark result"), ([str(good), "--tolerance",
                                                              "-1"], "--tolerance")):
        assert report.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, (argv, err)


def test_cli_missing_file_in_a_fresh_process_has_no_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.report",
         str(tmp_path / "missing.json")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "missing.json: no such file" in done.stderr and "Traceback" not in done.stderr
