"""Every code block of README.md and of the documentation site (``docs/**/*.md``), and every
program in examples/, is checked: Python type-checks under ``mypy --strict`` and runs
against the emulator, and command lines parse with the real parsers.

The convention the pages follow (docs/development.md says so):

- a fenced block whose info string starts with ``python`` is a complete module: it imports
  what it uses, defines what it names, and passes ``mypy --strict`` on its own;
- it is run as ``python block.py`` in an empty temporary directory, with a running
  emulator's ``CLOUDFLARE_BASE_URL``, ``CLOUDFLARE_API_TOKEN`` and ``CLOUDFLARE_ACCOUNT_ID``
  in its environment, and must exit 0, unless its info string says ``no-run``
  (```` ```python no-run ````: code that needs a real router, root or Cloudflare);
- anything that is not a whole module (a signature, a fragment, a session, an output) goes
  in a block of another kind: ```` ```text ````, ```` ```pycon ````, ```` ```sh ````,
  ```` ```ini ````, ```` ```yaml ````;
- every ``magicwan ...``, ``python -m magicwan ...`` and ``python -m magicwan.emulator ...``
  command line of an ``sh``, ``ini`` or ``yaml`` block parses with the real parser (nothing
  is run: these lines name real routers and real accounts).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import pytest
import pytest_asyncio

from magicwan import cli
from magicwan.cli.status import PRECEDENCE, ExitStatus
from magicwan.emulator import Emulator, run
from magicwan.emulator.__main__ import build_parser as emulator_parser

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
EXAMPLES = sorted((REPO / "examples").glob("*.py"))
_FENCE = re.compile(r"^```(\S*)[ \t]*(.*)$")

#: Python blocks expected to fail their type check, by their first line (strictly: once one
#: passes, or is gone, its entry must go). ``magicwan.ikelab`` arrives with the IKE lab's
#: move out of the emulator (issue 19, another branch): once merged, this entry goes.
PENDING: dict[str, str] = {}


@attrs.frozen
class Block:
    """One fenced block: its page, where it starts, its language, its info string, its code."""

    path: Path
    line: int
    language: str
    info: str
    code: str

    @property
    def first_line(self) -> str:
        return next((line for line in self.code.splitlines() if line.strip()), "")

    @property
    def runs(self) -> bool:
        return "no-run" not in self.info.split()

    @property
    def page(self) -> Path:
        """The page's path from the top of the repository."""
        return self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def module(self) -> str:
        """A file name for mypy: unique, and a valid module name."""
        stem = re.sub(r"\W", "_", str(self.page.with_suffix("")))
        return f"{stem.lower()}_line_{self.line}.py"


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file (fences at the start of a line), in order."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        start = index
        end = next((i for i in range(index + 1, len(lines)) if lines[i].strip() == "```"), None)
        assert end is not None, f"{path.name}:{start + 1}: a fence that never closes"
        language, rest = match.group(1), match.group(2)
        code = "\n".join(lines[start + 1 : end]) + "\n"
        info = f"{language} {rest}".strip()
        blocks.append(Block(path, start + 1, language, info, code))
        index = end + 1
    return blocks


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of a Markdown file, in order."""
    return [block for block in fenced_blocks(path) if block.language == "python"]


BLOCKS = [block for page in PAGES for block in python_blocks(page)]


def _pending(block: Block) -> str | None:
    return PENDING.get(block.first_line)


def _params() -> Iterator[object]:
    for block in BLOCKS:
        reason = _pending(block)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(block, id=block.name, marks=marks)


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """``mypy --strict`` over every block and example at once: file name -> errors."""
    directory = tmp_path_factory.mktemp("docs")
    files: list[Path] = []
    for block in BLOCKS:
        target = directory / block.module
        target.write_text(block.code, encoding="utf-8")
        files.append(target)
    files += EXAMPLES
    done = subprocess.run(  # noqa: S603 - our interpreter, our files
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(directory / ".mypy_cache"),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: errors found; more: mypy itself failed
    errors: dict[str, list[str]] = {path.name: [] for path in files}
    for line in done.stdout.splitlines():
        name = Path(line.split(":", 1)[0]).name
        if name in errors:
            errors[name].append(line)
    return errors


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with run(tunnels=10) as emu:
        yield emu


def test_the_pages_have_python_blocks() -> None:
    assert {block.path for block in BLOCKS} >= {README, DOCS / "quickstart.md"}
    assert all(block.code.strip() for block in BLOCKS)
    assert len({block.module for block in BLOCKS}) == len(BLOCKS)


def test_every_pending_entry_is_still_in_the_pages() -> None:
    firsts = {block.first_line for block in BLOCKS}
    stale = sorted(first for first in PENDING if first not in firsts)
    assert not stale, f"no page has these blocks any more: remove them from PENDING: {stale}"


@pytest.mark.parametrize("block", list(_params()))
def test_block_type_checks(block: Block, mypy_errors: dict[str, list[str]]) -> None:
    assert mypy_errors[block.module] == []


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_type_checks(example: Path, mypy_errors: dict[str, list[str]]) -> None:
    assert mypy_errors[example.name] == []


@pytest.mark.asyncio
@pytest.mark.parametrize("block", list(_params()))
async def test_block_runs_against_the_emulator(
    block: Block, emulator: Emulator, tmp_path: Path
) -> None:
    if not block.runs:
        pytest.skip("python no-run: needs a real router or Cloudflare")
    script = tmp_path / "block.py"
    script.write_text(block.code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "MAGICWAN_"))}
    env.update(emulator.env())
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (out + err).decode()[-2000:]


def test_the_convention_finds_blocks_of_every_kind(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n```python\nprint(1)\n```\n\n```sh\nls\n```\n\n"
        "```python no-run\nimport x\n```\n\n```text\nnot code\n```\n"
    )
    blocks = python_blocks(page)
    assert [(b.line, b.info, b.code, b.runs) for b in blocks] == [
        (3, "python", "print(1)\n", True),
        (11, "python no-run", "import x\n", False),
    ]


# -- command lines ------------------------------------------------------------------------

_SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")"}
_REDIRECTIONS = {">", ">>", "<"}
_PYTHONS = {"python", "python3", "sys.executable"}


def commands(line: str) -> Iterator[list[str]]:
    """The simple commands of one shell line, without their redirections."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    command: list[str] = []
    tokens = iter(lexer)
    for token in tokens:
        if token in _SEPARATORS:
            yield command
            command = []
        elif token in _REDIRECTIONS:
            next(tokens, None)  # the redirection's file
        else:
            command.append(token)
    yield command


def magicwan_argv(command: list[str]) -> tuple[str, list[str]] | None:
    """``("magicwan", argv)`` or ``("magicwan.emulator", argv)`` for a command that runs
    one of them, else None."""
    if command and Path(command[0]).name == "magicwan":
        return "magicwan", command[1:]
    if (
        len(command) >= 3
        and Path(command[0]).name in _PYTHONS
        and command[1] == "-m"
        and command[2] in ("magicwan", "magicwan.emulator")
    ):
        return command[2], command[3:]
    return None


@attrs.frozen
class CommandLine:
    """One command line of a page that runs magicwan or its emulator."""

    where: str
    program: str
    argv: list[str]


def block_command_lines(block: Block) -> list[CommandLine]:
    """Every magicwan and emulator command line of an sh, ini or yaml block."""
    if block.language not in ("sh", "ini", "yaml"):
        return []
    found: list[CommandLine] = []
    for offset, raw in enumerate(block.code.replace("\\\n", " ").splitlines()):
        line = raw.strip().removeprefix("$ ")
        if block.language == "ini":  # a systemd unit: only its Exec*= lines run something
            exec_line = re.match(r"Exec\w*=(.*)", line)
            line = exec_line.group(1) if exec_line else ""
        if line.startswith("#") or "magicwan" not in line:
            continue
        try:
            parsed = list(commands(line))
        except ValueError:
            if block.language == "sh":
                raise
            continue  # yaml or ini prose that is not a shell line
        for command in parsed:
            runs = magicwan_argv(command)
            if runs is not None:
                found.append(CommandLine(f"{block.name}+{offset + 1}", runs[0], runs[1]))
    return found


def command_lines(path: Path) -> list[CommandLine]:
    """Every magicwan and emulator command line of a page's sh, ini and yaml blocks."""
    return [line for block in fenced_blocks(path) for line in block_command_lines(block)]


COMMAND_LINES = [line for page in PAGES for line in command_lines(page)]


def _parser(program: str) -> argparse.ArgumentParser:
    return cli.build_parser() if program == "magicwan" else emulator_parser()


def test_the_pages_have_command_lines() -> None:
    programs = {line.program for line in COMMAND_LINES}
    assert programs == {"magicwan", "magicwan.emulator"}
    assert len(COMMAND_LINES) >= 20


@pytest.mark.parametrize("line", COMMAND_LINES, ids=lambda line: line.where)
def test_command_line_parses(line: CommandLine, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        _parser(line.program).parse_args(line.argv)
    except SystemExit as exit:  # --help and --version exit 0; a refused line exits 2
        code = exit.code
    else:
        code = 0
    assert code == 0, capsys.readouterr().err


def test_a_misspelt_command_line_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "page.md"
    page.write_text("```sh\nmagicwan psk rotate --all \\\n    --journal-dri x\n```\n")
    (line,) = command_lines(page)
    with pytest.raises(SystemExit) as exit:
        _parser(line.program).parse_args(line.argv)
    assert exit.value.code == 2
    assert "--journal-dri" in capsys.readouterr().err


def test_commands_split_a_shell_line() -> None:
    line = "17 3 * * *  set -a; . /etc/env; magicwan psk rotate --all -q >> /var/log/x.jsonl"
    assert [c for c in commands(line) if magicwan_argv(c)] == [
        ["magicwan", "psk", "rotate", "--all", "-q"]
    ]
    line = "python -m magicwan.emulator --port 0 > emulator.env &"
    assert next(commands(line)) == ["python", "-m", "magicwan.emulator", "--port", "0"]


# -- facts the pages state --------------------------------------------------------------

_OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*[a-z0-9])(?![\w*-])")
_NAMED_OPTION = re.compile(r"`(--[a-z][a-z0-9-]*[a-z0-9])(?![\w*-])")


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    """Every long option of a parser and of its subcommands' parsers."""
    found: set[str] = set()
    for action in parser._actions:
        found.update(option for option in action.option_strings if option.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                found |= options_of(subparser)
    return found - {"--help", "--version"}


CLI_OPTIONS = options_of(cli.build_parser())
EMULATOR_OPTIONS = options_of(emulator_parser())


@pytest.mark.parametrize(
    ("page", "options"),
    [("cli.md", CLI_OPTIONS), ("emulator.md", EMULATOR_OPTIONS)],
    ids=["magicwan", "magicwan.emulator"],
)
def test_every_option_is_documented(page: str, options: set[str]) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    assert options
    assert sorted(options - set(_OPTION.findall(text))) == []


@pytest.mark.parametrize(
    "page", [page for page in PAGES if page.name != "development.md"], ids=lambda p: p.name
)
def test_every_option_a_page_names_exists(page: Path) -> None:
    """An option in code (`--name ...`) is one of magicwan's or the emulator's (the
    development page also names pytest's and the benchmarks' options)."""
    named = set(_NAMED_OPTION.findall(page.read_text(encoding="utf-8")))
    assert sorted(named - CLI_OPTIONS - EMULATOR_OPTIONS) == []


def test_the_exit_statuses_page_matches_the_code() -> None:
    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    section = text.split("## Exit statuses", 1)[1]
    rows = re.findall(r"^\| (\d+) \|", section, flags=re.MULTILINE)
    assert sorted(map(int, rows)) == sorted(status.value for status in ExitStatus)
    order = re.search(r"the first of ([\d, ]+) wins", section)
    assert order is not None
    stated = [int(status) for status in order.group(1).split(",")]
    assert stated == [status.value for status in PRECEDENCE if status is not ExitStatus.OK]


def test_the_readme_test_command_is_what_ci_runs() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    at = ci.index('echo "== the README\'s test command"')
    command = ci[at + 1].strip().removeprefix("(").removesuffix(")")
    readme_sh = [b.code for b in fenced_blocks(README) if b.language == "sh"]
    assert any(command in code.splitlines() for code in readme_sh), command
    development = [b.code for b in fenced_blocks(DOCS / "development.md") if b.language == "sh"]
    assert any(command in code.splitlines() for code in development), command


def test_the_readme_links_into_the_site_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert any(link.startswith("docs/") for link in local)
    for link in local:
        path = link.split("#", 1)[0]
        if path:
            assert (REPO / path).exists(), f"README.md links to {link}, which does not exist"
