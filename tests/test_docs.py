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
