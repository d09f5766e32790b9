"""Every Python block of README.md, and every program in examples/, type-checks under
``mypy --strict`` and runs against the emulator.

The convention README.md follows (its Development section says so):

- a fenced block whose info string starts with ``python`` is a complete module: it imports
  what it uses, defines what it names, and passes ``mypy --strict`` on its own;
- it is run as ``python block.py`` in an empty temporary directory, with a running
  emulator's ``CLOUDFLARE_BASE_URL``, ``CLOUDFLARE_API_TOKEN`` and ``CLOUDFLARE_ACCOUNT_ID``
  in its environment, and must exit 0, unless its info string says ``no-run``
  (```` ```python no-run ````: code that needs a real router or Cloudflare);
- anything that is not a whole module (a signature, a fragment, a session) goes in a
  block of another kind: ```` ```text ````, ```` ```pycon ````, ```` ```sh ````.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import pytest
import pytest_asyncio

from magicwan.emulator import Emulator, run

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
EXAMPLES = sorted((REPO / "examples").glob("*.py"))
_FENCE = re.compile(r"^```(\S*)[ \t]*(.*)$")

#: README.md blocks written before the convention, by their first line: each is expected
#: to fail (strictly: once it passes, or is gone, the entry must go). Issue 13 names them;
#: the README rewrite removes them, and this set becomes empty.
PENDING: dict[str, str] = {}


@attrs.frozen
class Block:
    """One fenced Python block: where it starts, its info string, its code."""

    path: Path
    line: int
    info: str
    code: str

    @property
    def first_line(self) -> str:
        return next((line for line in self.code.splitlines() if line.strip()), "")

    @property
    def runs(self) -> bool:
        return "no-run" not in self.info.split()

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of a Markdown file, in order."""
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
        if language == "python":
            code = "\n".join(lines[start + 1 : end]) + "\n"
            blocks.append(Block(path, start + 1, f"python {rest}".strip(), code))
        index = end + 1
    return blocks


BLOCKS = python_blocks(README)


def _pending(block: Block) -> str | None:
    return PENDING.get(block.first_line)


def _params() -> Iterator[object]:
    for block in BLOCKS:
        reason = _pending(block)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(block, id=block.name, marks=marks)


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """``mypy --strict`` over every README block and example at once: file name -> errors."""
    directory = tmp_path_factory.mktemp("docs")
    files: list[Path] = []
    for block in BLOCKS:
        target = directory / f"readme_line_{block.line}.py"
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


def test_the_readme_has_python_blocks() -> None:
    assert BLOCKS
    assert all(block.code.strip() for block in BLOCKS)


def test_every_pending_entry_is_still_in_the_readme() -> None:
    firsts = {block.first_line for block in BLOCKS}
    stale = sorted(first for first in PENDING if first not in firsts)
    assert not stale, f"README.md no longer has these blocks: remove them from PENDING: {stale}"


@pytest.mark.parametrize("block", list(_params()))
def test_readme_block_type_checks(block: Block, mypy_errors: dict[str, list[str]]) -> None:
    assert mypy_errors[f"readme_line_{block.line}.py"] == []


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_type_checks(example: Path, mypy_errors: dict[str, list[str]]) -> None:
    assert mypy_errors[example.name] == []


@pytest.mark.asyncio
@pytest.mark.parametrize("block", list(_params()))
async def test_readme_block_runs_against_the_emulator(
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
