"""Finishing a cut or failed ``psk rotate --older-than`` run with the command it prints: the
resume takes the tunnels its journal left open, even though the run made their stamps fresh."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from aiohttp import web

from tests.support.cli import cli_emulator, journalled, magicwan

pytestmark = pytest.mark.asyncio


async def test_the_finish_command_of_an_older_than_run_reads_back_a_tunnel_left_in_doubt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A policy job: `magicwan psk rotate --older-than 30d --journal J`. For one tunnel the
    # edge stores every generated PSK but every answer is lost (a 503 after the store, as
    # a reset after the store would be): the run ends with that tunnel `failed`,
    # outcome unknown, and prints "to finish: magicwan psk rotate --older-than 30d
    # --journal J --resume". The operator runs it. --older-than selects by the edge's
    # `last_generated_on`, which the lost stores just made fresh; the finish command still
    # takes the tunnels the journal left open, so the edge's PSK ends up in the journal.
    path = tmp_path / "policy.jsonl"
    async with cli_emulator(monkeypatch, tunnels=3) as (emu, answers):
        doubtful = emu.tunnel_ids[0]

        async def store_then_lose(request: web.Request) -> None:
            if request.path.endswith(f"/{doubtful}/psk_generate"):
                emu.state.generate_psk(emu.state.tunnel(emu.account_id, doubtful))

        answers.hooks.append(store_then_lose)
        answers.add("psk_generate", status=503, code=10001, message="oops", tunnel=doubtful)
        argv = ["psk", "rotate", "--older-than", "30d", "--journal", str(path), "-q"]
        first = await magicwan(*argv)
        assert first.code == 1, first.err
        assert "--resume" in first.err  # "to finish: ..."
        answers.hooks.clear()
        answers.clear()

        second = await magicwan(*argv, "--resume")
        edge = emu.state.current_psk(emu.account_id, doubtful)
        held = journalled(path, emu.account_id)
    assert edge is not None
    assert held.get(doubtful) == edge, (
        f"the finish command exited {second.code} and the edge's PSK of {doubtful} is in no "
        f"journal line: {second.err!r}"
    )


async def test_the_finish_command_of_an_older_than_run_delivers_what_it_left_undelivered(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `magicwan psk rotate --older-than 30d --journal J --deliver-exec PROGRAM`: the
    # program fails for one router, so that tunnel is `undelivered` (exit 5: its new PSK
    # is live at Cloudflare, not on the router) and the run prints its finish command,
    # `... --older-than 30d ... --resume`. The router is fixed and the command run: though
    # the rotation made the tunnel's stamp fresh, the resume delivers the journalled PSK
    # (and does not exit 0 "all done" before it did).
    path = tmp_path / "policy.jsonl"
    broken = tmp_path / "broken"
    delivered = tmp_path / "delivered"
    delivered.mkdir()
    script = tmp_path / "push.py"
    script.write_text(
        "import os, pathlib, sys\n"
        "psk = sys.stdin.readline().strip()\n"
        "tunnel = os.environ['MAGICWAN_TUNNEL_ID']\n"
        f"if pathlib.Path({str(broken)!r}).read_text() == tunnel:\n"
        "    sys.exit(1)\n"
        f"(pathlib.Path({str(delivered)!r}) / tunnel).write_text(psk)\n"
    )
    async with cli_emulator(monkeypatch, tunnels=3) as (emu, _):
        unlucky = emu.tunnel_ids[1]
        broken.write_text(unlucky)
        argv = [
            "psk",
            "rotate",
            "--older-than",
            "30d",
            "--journal",
            str(path),
            "--deliver-exec",
            f"{sys.executable} {script}",
            "--deliver-retries",
            "0",
            "-q",
        ]
        first = await magicwan(*argv)
        assert first.code == 5, first.err
        broken.write_text("")  # the router is fixed

        second = await magicwan(*argv, "--resume")
        edge = emu.state.current_psk(emu.account_id, unlucky)
    on_router = (delivered / unlucky).read_text() if (delivered / unlucky).exists() else None
    assert on_router == edge, (
        f"the finish command exited {second.code}; the router of {unlucky} never got the "
        f"PSK Cloudflare holds: {second.err!r}"
    )
