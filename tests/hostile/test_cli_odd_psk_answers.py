"""Second review: the command line, in-process against the emulator on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from magicwan.emulator import EmulatorState, run
from tests.support.cli import magicwan
from tests.support.tiny_server import Handler

pytestmark = pytest.mark.asyncio


@web.middleware
async def _drop_the_query(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A gateway that normalises URLs by dropping their query string: ?validate_only=true
    never reaches the server, which applies the request."""
    return await handler(request.clone(rel_url=request.rel_url.with_query(None)))


async def test_cli_set_validate_only_keeps_the_psk_it_sent_somewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `magicwan psk set ACCOUNT TUNNEL --validate-only --journal FILE --show-psk --json`.
    # The CLI makes a PSK (new_psk) and sends it "to be validated". SECURITY.md ("Validation
    # that was not"): a bulk set's Validated outcome keeps the PSK it sent, in case the
    # server applied it. The library does; the command line throws it away: the journal it
    # was given is ignored under --validate-only, --show-psk is ignored, the JSON line has
    # no PSK, and it exits 0 "nothing changed". Through a gateway that drops the query the
    # tunnel now runs on that PSK, which exists nowhere but at the edge: the tunnel is down.
    state = EmulatorState(tunnels=1, seed=4, rate_limit=None)
    journal = tmp_path / "j.jsonl"
    async with run(state=state, middlewares=[_drop_the_query]) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        tunnel = emu.tunnel_ids[0]
        before = emu.state.current_psk(emu.account_id, tunnel)
        result = await magicwan(
            "psk",
            "set",
            emu.account_id,
            tunnel,
            "--validate-only",
            "--journal",
            str(journal),
            "--show-psk",
            "--json",
        )
        live = emu.state.current_psk(emu.account_id, tunnel)
    assert live is not None
    assert live != before  # the server really applied it
    recorded = journal.read_text() if journal.exists() else ""
    assert live in result.out or live in recorded or result.code != 0, (
        f"exit {result.code}, 'validated, nothing changed': the tunnel holds the PSK the "
        "command made and sent, and it is in no journal and not on stdout"
    )


async def test_cli_generate_validate_only_answered_with_a_psk_does_not_exit_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `magicwan psk generate ACCOUNT TUNNEL --validate-only --json`. The first review fixed
    # this for `psk rotate --validate-only` (an answer carrying a PSK is "unrecorded", not
    # "validated"); the one-tunnel command takes another path (_generate) that never looks:
    # the server (behind a gateway that drops ?validate_only=true) generated a PSK and sent
    # it; the command prints "validated: the request would be accepted (nothing changed)",
    # exits 0, and the PSK it received is shown nowhere and journalled nowhere. The tunnel
    # is down and the operator was told nothing changed.
    state = EmulatorState(tunnels=1, seed=6, rate_limit=None)
    async with run(state=state, middlewares=[_drop_the_query]) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        tunnel = emu.tunnel_ids[0]
        result = await magicwan("psk", "generate", emu.account_id, tunnel, "--validate-only")
        generated = state.total_generations()
        live = emu.state.current_psk(emu.account_id, tunnel)
    assert generated == 1  # the server really generated one
    assert live is not None
    assert result.code != 0, (
        f"exit 0 and {result.err.strip()!r}: the tunnel holds a PSK the command received and "
        "dropped"
    )


async def test_cli_generate_whose_retry_left_doubt_does_not_report_plain_success(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `magicwan psk generate ACCOUNT TUNNEL --journal FILE --timeout 0.3`. The first request's
    # answer is lost (it stalls past the timeout, then stores its PSK late: the emulator's
    # late_store fault); the retry returns PSK B. The journal marks B uncertain; rotation
    # would read the tunnel back after the settle window. The one-tunnel command does
    # neither: it says "new PSK generated ...; recorded in the journal", exits 0, and says
    # nothing of the doubt. A moment later the late store lands: the edge holds a PSK nobody
    # has, the journal's (and the operator's) PSK is dead, and exit 0 told cron all is well.
    import asyncio

    from magicwan.emulator import Faults

    state = EmulatorState(tunnels=1, seed=8, rate_limit=None)
    journal = tmp_path / "j.jsonl"
    generates = 0

    @web.middleware
    async def first_one_is_late(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal generates
        if request.path.endswith("/psk_generate"):
            generates += 1
            late = generates == 1
            state.set_faults(Faults(late_store=1.0, late_store_delay=2.0) if late else Faults())
        return await handler(request)

    async with run(state=state, middlewares=[first_one_is_late], shutdown_timeout=2.0) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        tunnel = emu.tunnel_ids[0]
        result = await magicwan(
            "psk", "generate", emu.account_id, tunnel, "--journal", str(journal), "--timeout", "0.3"
        )
        for _ in range(40):  # the late store lands
            if state.total_generations() >= 2:
                break
            await asyncio.sleep(0.1)
        live = emu.state.current_psk(emu.account_id, tunnel)
    assert generates == 2
    assert live is not None
    assert live not in journal.read_text()  # the journalled PSK is dead
    warned = any(word in result.err.lower() for word in ("uncertain", "doubt", "unknown"))
    assert result.code != 0 or warned, (
        f"exit {result.code}, {result.err.strip()!r}: no word that the PSK may be superseded"
    )
