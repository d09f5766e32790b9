"""``magicwan psk set``: the PSK is made (or read from stdin, never argv), journalled before
the request is sent and never echoed; a server that applies another PSK fails the tunnel and
the journal keeps the PSK it says it applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from magicwan.emulator import Emulator
from magicwan.journal import read_journal
from tests.support.cli import (
    Answers,
    edge_psk,
    emulator_behind,
    journal_events,
    journalled,
    magicwan,
)


@pytest.mark.asyncio
async def test_set_makes_the_psk_and_journals_it_before_the_request_is_sent(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    journal = tmp_path / "j.jsonl"
    tunnel = emu.tunnel_ids[0]
    on_disk_when_sent: list[bool] = []

    async def look(request: web.Request) -> None:
        if request.path.endswith("/psk"):
            body = await request.json()
            on_disk_when_sent.append(body["psks"][0]["psk"] in journal.read_text())

    answers.hooks.append(look)
    result = await magicwan("psk", "set", tunnel, "--journal", str(journal))

    assert result.code == 0, result.err
    assert on_disk_when_sent == [True]
    psk = edge_psk(emu, tunnel)
    assert psk is not None
    assert len(psk) == 32
    *lines, finished = journal_events(journal)
    assert [(e["event"], e["method"], e["psk"]) for e in lines] == [
        ("intent", "set", psk),
        ("rotated", "set", psk),
    ]
    assert finished["event"] == "finished"
    assert result.out == ""
    assert psk not in result.err


@pytest.mark.asyncio
async def test_set_reads_the_psk_from_stdin_and_never_echoes_it(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    tunnel = emu.tunnel_ids[1]
    mine = "MyOwn-PSK_with.symbols!0123456789"
    journal = str(tmp_path / "j.jsonl")
    result = await magicwan(
        "psk", "set", tunnel, "--psk-stdin", "--journal", journal, stdin=mine + "\n"
    )

    assert result.code == 0, result.err
    assert edge_psk(emu, tunnel) == mine
    assert mine not in result.out + result.err
    assert journalled(Path(journal), emu.account_id) == {tunnel: mine}

    short = "tooShort1"
    refused = await magicwan("psk", "set", tunnel, "--psk-stdin", "--journal", journal, stdin=short)
    assert refused.code == 2
    assert "16 to 128 characters" in refused.err
    assert short not in refused.err
    assert edge_psk(emu, tunnel) == mine


@pytest.mark.asyncio
async def test_set_needs_a_journal_and_never_takes_a_psk_as_an_argument(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    tunnel = emu.tunnel_ids[0]
    no_journal = await magicwan("psk", "set", tunnel)
    as_argument = await magicwan("psk", "set", tunnel, "--psk", "x" * 32, "--journal", "j")

    assert no_journal.code == 2
    assert "--journal FILE is required" in no_journal.err
    assert as_argument.code == 2
    assert "unrecognized arguments: --psk" in as_argument.err
    assert "x" * 32 not in as_argument.err
    assert emu.state.requests.total == 0


@pytest.mark.asyncio
async def test_set_show_psk_and_validate_only(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    tunnel = emu.tunnel_ids[2]
    validated = await magicwan("psk", "set", tunnel, "--validate-only")
    assert validated.code == 0, validated.err
    assert emu.state.tunnel(emu.account_id, tunnel).generation == 0

    shown = await magicwan("psk", "set", tunnel, "--journal", str(tmp_path / "j"), "--show-psk")
    assert shown.code == 0, shown.err
    assert shown.out == f"{edge_psk(emu, tunnel)}\n"


_THEIRS = "server-chosen-psk-0123456789abcd"


@web.middleware
async def _answer_another_psk(request: web.Request, handler: Any) -> web.StreamResponse:
    """A server that says it applied a PSK other than the one sent."""
    response: web.StreamResponse = await handler(request)
    if not request.path.endswith("/ipsec_tunnels/psk") or not isinstance(response, web.Response):
        return response
    assert response.body is not None
    data = json.loads(bytes(response.body))  # type: ignore[arg-type]
    for item in data["result"]["successfully_applied_psks"].values():
        item["psk"] = _THEIRS
    return web.json_response(data, status=response.status)


@pytest.mark.asyncio
async def test_set_applied_with_another_psk_journals_it_and_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    journal = tmp_path / "j.jsonl"
    async with emulator_behind(monkeypatch, _answer_another_psk) as emu:
        tunnel = emu.tunnel_ids[0]
        result = await magicwan("psk", "set", tunnel, "--journal", str(journal))
    assert result.code == 1, result.err
    assert "other than the one sent" in result.err
    assert _THEIRS not in result.err + result.out
    [record] = read_journal(journal).values()
    assert record.psk == _THEIRS  # Cloudflare's word, kept
    assert record.uncertain  # a rotate --resume reads it back before trusting it
