"""A stream that cannot encode a name (``PYTHONIOENCODING=ascii``, a C locale): what it
cannot hold is escaped, in every command, and nothing crashes."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from magicwan import cli
from magicwan.cli.console import Console
from magicwan.emulator import Emulator
from tests.support.cli import Answers, cli_emulator, process_env

NAME = "filiale-zürich"


def _ascii_stream() -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(), encoding="ascii", write_through=True)


def _text(stream: io.TextIOWrapper) -> str:
    buffer = stream.buffer
    assert isinstance(buffer, io.BytesIO)
    return buffer.getvalue().decode("ascii")


def test_console_escapes_what_the_stream_cannot_encode() -> None:
    out, err = _ascii_stream(), _ascii_stream()
    console = Console(out, err)

    console.data(f"name {NAME}")
    console.table([["NAME"], [NAME]])
    console.tell(f"told {NAME}")

    assert _text(out) == "name filiale-z\\xfcrich\nNAME\nfiliale-z\\xfcrich\n"
    assert _text(err) == "told filiale-z\\xfcrich\n"


def test_console_writes_what_the_stream_can_encode_unchanged() -> None:
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    console = Console(out, io.StringIO())

    console.data(NAME)

    buffer = out.buffer
    assert isinstance(buffer, io.BytesIO)
    assert buffer.getvalue().decode() == NAME + "\n"


@pytest_asyncio.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Emulator, Answers]]:
    async with cli_emulator(monkeypatch, tunnels=2) as pair:
        pair[0].state.add_tunnel(name=NAME)
        yield pair


async def _ascii_run(*argv: str) -> tuple[int, str, str]:
    out, err = _ascii_stream(), _ascii_stream()
    code = await cli.amain(list(argv), stdout=out, stderr=err, stdin=io.StringIO(""))
    return code, _text(out), _text(err)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "argv",
    [("tunnels", "list"), ("psk", "rotate", "--all", "--dry-run")],
    ids=["tunnels-list", "rotate-dry-run"],
)
async def test_a_non_ascii_name_on_an_ascii_stdout_is_escaped(
    env: tuple[Emulator, Answers], argv: tuple[str, ...]
) -> None:
    code, out, err = await _ascii_run(*argv)

    assert code == 0, err
    assert "filiale-z\\xfcrich" in out + err


@pytest.mark.asyncio
async def test_tunnels_list_under_pythonioencoding_ascii_in_a_real_process(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "magicwan",
        "tunnels",
        "list",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=process_env(emu, PYTHONIOENCODING="ascii"),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)

    assert proc.returncode == 0, err.decode()
    assert "filiale-z\\xfcrich" in out.decode("ascii")
    assert b"UnicodeEncodeError" not in err
