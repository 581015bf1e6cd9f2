"""README.md and docs/ cannot go stale: every ``carbonx`` command they show names a real
subcommand with options it really has, their examples run, and they point only at files
inside the project (never at the team's notes outside it)."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SUBCOMMANDS = {
    "replay", "holdings", "journal-cut", "serve", "demo", "broker-config", "comply", "gen-orders"
}
OPTION = re.compile(r"(?<![\w-])--[a-z][\w-]*")


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def carbonx_commands(block: str) -> list[list[str]]:
    """The ``carbonx`` commands of a shell block, each as its words.

    A here-document's text is skipped; a comment (``#`` at the start or after a space) is
    dropped; a line ending in a backslash, or an indented line after a ``carbonx`` line
    (a synopsis), goes on with it; each part of a chain (``&&``, ``||``, ``;``, `` | ``)
    is read alone."""
    lines: list[str] = []
    joining = False
    here_document = None
    for raw in block.splitlines():
        if here_document is not None:
            if raw.strip() == here_document:
                here_document = None
            continue
        opened = re.search(r"<<-?\s*['\"]?(\w+)", raw)
        if opened:
            here_document = opened.group(1)
        line = re.sub(r"(^|\s)#.*", "", raw).rstrip()
        if lines and (joining or (raw[:1].isspace() and "carbonx" in lines[-1])):
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
        joining = lines[-1].endswith("\\")
        lines[-1] = lines[-1].rstrip("\\").rstrip()
    commands = []
    for line in lines:
        for part in re.split(r"&&|\|\||;| \| ", line):
            words = part.split()
            if words and words[0] == "carbonx":
                commands.append(words)
    return commands


@functools.cache
def help_text(subcommand: str | None) -> str:
    args = ["--help"] if subcommand is None else [subcommand, "--help"]
    done = subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def real_subcommands() -> set[str]:
    """The subcommands ``carbonx --help`` lists (one a line, indented four spaces)."""
    return set(re.findall(r"^ {4}([a-z][\w-]*)", help_text(None), flags=re.M))


def real_options(subcommand: str | None) -> set[str]:
    """The options of ``carbonx [SUBCOMMAND] --help``: those of its usage lines and the
    entries of its option list (lines indented two spaces, ``  -h, --help``)."""
    text = help_text(subcommand)
    usage = text.split("\n\n")[0]
    assert usage.startswith("usage: carbonx"), usage
    listed = re.findall(r"^ {2}(?:-\w, )?(--[a-z][\w-]*)", text, flags=re.M)
    return set(OPTION.findall(usage)) | set(listed)


def problems(words: list[str]) -> list[str]:
    """What is wrong with the shown command *words*: an unknown subcommand, or an
    option its ``--help`` does not list."""
    shown = " ".join(words)
    subcommand = words[1] if len(words) > 1 and not words[1].startswith("-") else None
    if subcommand is not None and subcommand not in real_subcommands():
        return [f"{shown!r}: no subcommand {subcommand!r}"]
    options = real_options(subcommand)
    return [
        f"{shown!r}: {option} is not an option of carbonx {subcommand or ''}".rstrip()
        for option in OPTION.findall(" ".join(words[1:])) if option not in options
    ]


def test_the_help_reader_finds_the_real_subcommands_and_options():
    assert real_subcommands() >= SUBCOMMANDS
    assert {"--format", "--ledger", "--fills", "--journal", "--holdings"} <= real_options("replay")
    assert {"--help", "--version"} <= real_options(None)
    assert "--help" in real_options("serve")
    assert "--ledger" not in real_options("holdings")


def test_every_carbonx_command_shown_is_real():
    shown = {
        page.relative_to(ROOT).as_posix(): [
            words for block in blocks(page.read_text(encoding="utf-8"), "sh")
            for words in carbonx_commands(block)
        ]
        for page in PAGES
    }
    readme = shown["README.md"]
    assert len(readme) >= 4, readme  # a reader that finds none is broken
    named = {w[1] for commands in shown.values() for w in commands if len(w) > 1}
    assert named >= real_subcommands(), f"no page shows {real_subcommands() - named}"
    found = [
        f"{page}: {problem}" for page, commands in shown.items() for words in commands
        for problem in problems(words)
    ]
    assert found == []


def test_the_command_reader_follows_chains_synopses_and_comments():
    block = ("pip install . && carbonx demo --seconds 2   # --not-an-option\n"
             "carbonx serve [--broker URL]\n"
             "              [--journal DIR]\n"
             "cat > f.csv <<'EOF'\n"
             "  carbonx is a word here\n"
             "EOF\n"
             "carbonx replay f.csv --format csv|ndjson \\\n"
             "    --json | head; carbonx --version\n")
    assert carbonx_commands(block) == [[
        "carbonx", "demo", "--seconds", "2"
    ], ["carbonx", "serve", "[--broker", "URL]", "[--journal",
        "DIR]"], ["carbonx", "replay", "f.csv", "--format", "csv|ndjson", "--json"],
                                       ["carbonx", "--version"]]
    # And stale commands are caught: a subcommand or an option that does not exist.
    assert problems(["carbonx", "replay", "f.csv", "--json"]) == []
    assert problems(["carbonx", "--version"]) == []
    assert problems(
        ["carbonx", "replay", "f.csv",
         "--csv"]) == ["'carbonx replay f.csv --csv': --csv is not an option of carbonx replay"]
    assert problems(["carbonx", "trade", "--broker",
                     "mqtt://x"]) == ["'carbonx trade --broker mqtt://x': no subcommand 'trade'"]
    assert problems(["carbonx", "holdings", "DIR", "--ledger"]) != []


# --- links: only inside the project --------------------------------------------------

INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", flags=re.M)
AUTOLINK = re.compile(r"<([a-z][a-z0-9+.-]*:[^>\s]+)>", flags=re.I)
SCHEME = re.compile(r"[a-z][a-z0-9+.-]*:", flags=re.I)


def anchors(markdown: str) -> set[str]:
    """The anchors of a page's headings, as GitHub makes them."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    return {
        re.sub(r"[^\w\- ]", "",
               heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)
    }


def link_problems(page: Path, text: str) -> list[str]:
    """What in *page* (whose text is *text*) points outside the project or at nothing."""
    found = []
    if "shared/" in text:
        found.append(f"{page.name}: mentions shared/, which users never see")
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))
    targets = INLINE.findall(prose) + REFERENCE.findall(prose) + AUTOLINK.findall(prose)
    for target in targets:
        if SCHEME.match(target) or target.startswith(("/", "~", "\\")):
            found.append(f"{page.name}: {target} leads outside the project")
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page.resolve()
        if not resolved.is_relative_to(ROOT):
            found.append(f"{page.name}: {target} leads outside the project")
        elif not resolved.exists():
            found.append(f"{page.name}: {target} is not a file in the project")
        elif (anchor and resolved.suffix == ".md"
              and anchor not in anchors(resolved.read_text(encoding="utf-8"))):
            found.append(f"{page.name}: {target}: no heading #{anchor}")
    return found


def test_pages_point_only_at_files_in_the_project():
    links = 0
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        links += len(INLINE.findall(text))
        found += link_problems(page, text)
    assert found == []
    assert links >= 20  # the README and docs link each other: a reader finding none is broken


def test_the_link_checker_catches_what_leads_outside():
    page = ROOT / "README.md"
    text = ("See [the design](../shared/DESIGN.md), [the web](https://example.com),\n"
            "[gone](docs/no-such-page.md), [root](/etc/passwd), <http://example.com>,\n"
            "[a bad anchor](docs/market.md#no-such-heading), and these, which are fine:\n"
            "[cli](docs/cli.md#exit-statuses-and-errors), [ledger](#the-ledger-and-the-journal),\n"
            "![chart](benchmarks/results/latest-report/throughput.png).\n"
            "[ref]: ../../outside.md\n")
    found = link_problems(page, text)
    assert found == [
        "README.md: mentions shared/, which users never see",
        "README.md: ../shared/DESIGN.md leads outside the project",
        "README.md: https://example.com leads outside the project",
        "README.md: docs/no-such-page.md is not a file in the project",
        "README.md: /etc/passwd leads outside the project",
        "README.md: docs/market.md#no-such-heading: no heading #no-such-heading",
        "README.md: ../../outside.md leads outside the project",
        "README.md: http://example.com leads outside the project"
    ]


# --- the docs' own examples run ---------------------------------------------------------


def test_the_order_file_examples_in_docs_replay_cleanly(tmp_path):
    examples = [(page, block) for page in PAGES[1:]
                for block in blocks(page.read_text(encoding="utf-8"), "csv")
                if block.startswith("action,")]
    assert examples, "docs/formats.md shows an order file"
    for number, (page, block) in enumerate(examples):
        path = tmp_path / f"example-{number}.csv"
        path.write_text(block, encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "replay",
             str(path), "--ledger", "--json"], cwd=tmp_path, capture_output=True, text=True,
            timeout=60)
        assert done.returncode == 0, f"{page.name}: {done.stderr}"
        summary = json.loads(done.stdout)
        assert summary["messages"] == len(block.strip().splitlines()) - 1
        assert summary["rejected"] == 0, f"{page.name}: {summary['rejects']}"
        assert summary["trades"] > 0


# --- reason codes: every code the exchange gives is documented, by stage -----------------

FORMATS = ROOT / "docs" / "formats.md"
REASONS_HEADING = "## Reason codes"


def section(markdown: str, heading: str) -> str | None:
    """The text under the heading line *heading* (``## Reason codes``) up to the next heading
    of the same level or a higher one, or ``None`` if the page has no such heading. Lines
    inside code blocks are never headings."""
    level = len(heading) - len(heading.lstrip("#"))
    found: list[str] | None = None
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        heading_level = 0 if fenced else len(line) - len(line.lstrip("#"))
        is_heading = 0 < heading_level <= 6 and line[heading_level:heading_level + 1] == " "
        if found is None:
            if not fenced and line.rstrip() == heading:
                found = []
            continue
        if is_heading and heading_level <= level:
            break
        found.append(line)
    return None if found is None else "\n".join(found)


def reason_tables(text: str) -> dict[str, list[str]]:
    """The codes (in backticks) that the tables of *text* name in their first column, by the
    subheading above each table (``""`` before the first), in order. A table's header row
    and its ``|---|`` row name none."""
    tables: dict[str, list[str]] = {}
    subheading = ""
    rows: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            subheading = line.lstrip("#").strip()
        if line.startswith("|"):
            rows.append(line)
            continue
        if rows:  # a table ended: its rows after the header and the |---| line
            for row in rows[2:]:
                first = row.strip("|").split("|")[0]
                tables.setdefault(subheading, []).extend(re.findall(r"`([^`]+)`", first))
            rows = []
    return tables


def reason_code_problems(text: str) -> list[str]:
    """What the "Reason codes" section *text* gets wrong: a ``Reason`` missing from every
    table, a code in a first column that is no ``Reason``, and, in the table under each
    stage's subheading (``### Validation``, ...), a member of that stage missing, listed
    twice, or a code of another stage."""
    from exchange.reasons import Reason, Stage

    tables = reason_tables(text)
    named = [code for codes in tables.values() for code in codes]
    known = {reason.value for reason in Reason}
    found = [f"{code}: not a Reason" for code in dict.fromkeys(named) if code not in known]
    found += [f"{reason.value}: not in any table" for reason in Reason if reason.value not in named]
    stages = {subheading.split()[0].lower(): codes for subheading, codes in tables.items()
              if subheading}
    for stage in Stage:
        codes = stages.get(stage.value)
        if codes is None:
            found.append(f"no table of the {stage.value} stage")
            continue
        members = {reason.value for reason in Reason if stage in reason.stages}
        found += [f"{code}: listed {codes.count(code)} times under {stage.value}"
                  for code in dict.fromkeys(codes) if codes.count(code) > 1]
        found += [f"{code}: missing under {stage.value}" for code in sorted(members - set(codes))]
        found += [f"{code}: under {stage.value}, not one of its codes"
                  for code in dict.fromkeys(codes) if code in known and code not in members]
    return found


def test_every_reason_code_is_documented_under_its_stages():
    text = section(FORMATS.read_text(encoding="utf-8"), REASONS_HEADING)
    assert text is not None, f"docs/formats.md has no '{REASONS_HEADING}' section"
    assert "reason-codes" in anchors(FORMATS.read_text(encoding="utf-8"))  # others link to it
    assert reason_code_problems(text) == []


def test_the_reason_code_checker_catches_what_is_wrong():
    from exchange.reasons import Reason, Stage

    good = "\n".join(
        f"### {stage.value.capitalize()}\n\n| reason | when |\n|---|---|\n" + "".join(
            f"| `{reason.value}` | given |\n" for reason in Reason if stage in reason.stages)
        for stage in Stage)
    assert reason_code_problems(good) == []
    page = f"# T\n\n{REASONS_HEADING}\n\n{good}\n## Next\n\n| `x` | y |\n"
    assert section(page, REASONS_HEADING) == f"\n{good.rstrip()}\n"  # up to "## Next"
    assert section("```\n## Reason codes\n```\n", REASONS_HEADING) is None
    broken = (good.replace("| `off_tick` | given |\n", "")
              .replace("| `too_large` | given |\n", "| `too_large` | given |\n| `no_such` | x |\n")
              .replace("| `mass_cancel` | given |\n", "| `mass_cancel` | given |\n" * 2)
              .replace("| `overloaded` | given |\n", "| `overloaded`, `market_open` | given |\n"))
    assert reason_code_problems(broken) == [
        "no_such: not a Reason", "off_tick: not in any table",
        "off_tick: missing under validation", "mass_cancel: listed 2 times under outcome",
        "market_open: under gateway, not one of its codes"
    ]
    renamed = good.replace("### Risk", "### Hazard")
    assert "no table of the risk stage" in reason_code_problems(renamed)
