"""The usage the emulator's docstrings show runs, and what it asserts is true:
``magicwan.emulator`` (in-process, against a client) and ``magicwan.emulator.state``."""

from __future__ import annotations

import textwrap

import pytest

import magicwan.emulator
import magicwan.emulator.state


def literal_block(doc: str | None, intro: str) -> str:
    """The code of the reST literal block that follows ``intro`` (a line ending in ``::``)."""
    assert doc is not None
    block = doc.split(intro + "\n", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:  # after the blank line that opens the block
        if line and not line.startswith(" "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


@pytest.mark.asyncio
async def test_the_in_process_snippet_runs_and_its_assertions_hold() -> None:
    snippet = literal_block(magicwan.emulator.__doc__, "Start it in-process::")
    assert "async with run(" in snippet
    assert "assert " in snippet
    namespace: dict[str, object] = {}
    exec(  # noqa: S102 - our own docstring's code, against a local emulator
        "async def snippet():\n" + textwrap.indent(snippet, "    "), namespace
    )
    await namespace["snippet"]()  # type: ignore[operator]


def test_the_state_snippet_runs_and_its_assertions_hold() -> None:
    snippet = literal_block(magicwan.emulator.state.__doc__, "Tests seed and audit it directly::")
    assert "assert " in snippet
    exec(snippet, {"EmulatorState": magicwan.emulator.EmulatorState})  # noqa: S102 - our docstring
