"""The command line when the server's answer about a PSK is odd: a validate-only request it
applies anyway, another PSK than the one sent, a retry or read-back that leaves doubt. The
command never exits 0 "nothing changed" while a tunnel holds a PSK, and shows or records the
PSK the tunnel most likely holds. In-process, against the emulator or tiny servers on
loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from magicwan.emulator import EmulatorState, run
from magicwan.journal import Rotated
from tests.support.cli import magicwan
from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.disk import fail_journal_writes
from tests.support.emulator import drops_the_query
from tests.support.tiny_server import (
    THEIRS,
    TOKEN,
    Handler,
    applies_its_own_psk,
    envelope,
    tiny_server,
)

pytestmark = pytest.mark.asyncio


async def test_cli_set_validate_only_keeps_the_psk_it_sent_somewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `magicwan psk set ACCOUNT TUNNEL --validate-only --journal FILE --show-psk --json`.
    # The CLI makes a PSK and sends it "to be validated". SECURITY.md ("Validation that was
    # not"): a bulk set's Validated outcome keeps the PSK it sent, in case the server
    # applied it (through a gateway that drops the query, it does). The command keeps it
    # too: in the journal it was given, on stdout under --show-psk, or in the JSON line.
    state = EmulatorState(tunnels=1, seed=4, rate_limit=None)
    journal = tmp_path / "j.jsonl"
    async with run(state=state, middlewares=[drops_the_query]) as emu:
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
    # `magicwan psk generate ACCOUNT TUNNEL --validate-only --json`. The server (behind a
    # gateway that drops ?validate_only=true) generates a PSK and sends it. As for `psk
    # rotate --validate-only`, an answer carrying a PSK is not "validated (nothing
    # changed)": the command does not exit 0.
    state = EmulatorState(tunnels=1, seed=6, rate_limit=None)
    async with run(state=state, middlewares=[drops_the_query]) as emu:
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
    # late_store fault); the retry returns PSK B. A moment later the late store lands and
    # B is dead, so the command must not report plain success: it reads the tunnel back
    # after the settle window (as a rotation does), or says B is in doubt.
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


async def test_cli_validate_only_through_a_server_that_generates_does_not_exit_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `magicwan psk rotate --all --validate-only` (no journal: "changes nothing"). Every
    # answer carries a psk, which a validate_only answer never does: the server generated.
    # The command does not print "validated" and exit 0.
    from tests.support.cli import magicwan

    state = EmulatorState(tunnels=3, seed=9, rate_limit=None)
    async with run(state=state, middlewares=[drops_the_query]) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        result = await magicwan("psk", "rotate", "--all", "--validate-only", "--json")
        generated = state.total_generations()
    assert generated == 3  # the server really generated
    assert result.code != 0, "exit 0: 'validated, nothing changed', yet 3 PSKs are lost"


def _env(monkeypatch: pytest.MonkeyPatch, base: str) -> None:
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", base)
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    for name in ("CLOUDFLARE_EMAIL", "CLOUDFLARE_API_KEY"):
        monkeypatch.delenv(name, raising=False)


async def test_cli_set_another_psk_applied_and_disk_full_does_not_point_at_the_intent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `magicwan psk set ACCOUNT TUNNEL --journal FILE`. The intent line (the PSK sent) is
    # fsynced, the server answers "applied" with ANOTHER PSK, and the disk fills up just
    # then: the `rotated` line carrying Cloudflare's PSK cannot be written. The command
    # exits 4, and does not point the operator at the journal's intent line (the PSK sent,
    # which the tunnel does NOT hold): it says the PSK received is in no journal.
    path = tmp_path / "j.jsonl"
    fail_journal_writes(monkeypatch, lambda event: isinstance(event, Rotated))
    async with tiny_server(applies_its_own_psk) as base:
        _env(monkeypatch, base)
        result = await magicwan("psk", "set", ACCOUNT, TUNNEL, "--journal", str(path))
    journalled = path.read_text() if path.exists() else ""
    assert THEIRS not in journalled  # the disk really was full for it
    assert result.code != 0
    assert "intent line" not in result.err, (
        "the operator is sent to the intent line's PSK (the one sent), which the tunnel does "
        "not hold; the PSK Cloudflare applied is recorded nowhere"
    )


async def test_cli_set_validate_only_answered_with_another_psk_keeps_the_psk_received(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `magicwan psk set ACCOUNT TUNNEL --validate-only --journal FILE --show-psk --json`.
    # The server (behind a gateway that drops ?validate_only=true) applies, and answers
    # "applied" with a PSK other than the one sent. The PSK the tunnel now holds (the
    # server's word) is shown or journalled, not replaced by the one sent.
    path = tmp_path / "j.jsonl"
    async with tiny_server(applies_its_own_psk) as base:
        _env(monkeypatch, base)
        result = await magicwan(
            "psk",
            "set",
            ACCOUNT,
            TUNNEL,
            "--validate-only",
            "--journal",
            str(path),
            "--show-psk",
            "--json",
        )
    journalled = path.read_text() if path.exists() else ""
    assert THEIRS in result.out or THEIRS in journalled, (
        f"exit {result.code}: the PSK the server says it applied is not on stdout and in no "
        "journal line (only the PSK sent is kept)"
    )


async def test_cli_generate_whose_read_backs_never_settle_does_not_drop_the_last_psk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `magicwan psk generate ACCOUNT TUNNEL --show-psk --settle-window 0` (no --journal:
    # allowed, stdout is the PSK's record). The first generate answers 500 (outcome
    # unknown), the retry gets a PSK: doubt, so the command reads the tunnel back. The
    # edge's stamp is always a second newer than the one the generate answer carried (a
    # clock difference between the two handlers, or a hostile server), so every read-back
    # regenerates until the command gives up. The PSK of the LAST generate, which the tunnel
    # most likely holds (nothing contradicts it but a stamp), is printed, or the exit status
    # says "unrecorded" (4), not "failed".
    psks: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        tunnel = request.match_info["tail"].split("/")[-1]
        if request.method == "GET":
            tunnel_body = {
                "id": tunnel,
                "psk_metadata": {"last_generated_on": "2030-01-01T00:00:01.000000Z"},
            }
            return web.Response(
                body=envelope({"ipsec_tunnel": tunnel_body}), content_type="application/json"
            )
        psks.append(f"generated-psk-{len(psks):04d}-0123456789abcdef")
        if len(psks) == 1:
            return web.Response(status=500)  # stored, answer lost: doubt
        tunnel = request.match_info["tail"].split("/")[-2]
        result = {
            "ipsec_tunnel_id": tunnel,
            "psk": psks[-1],
            "psk_metadata": {"last_generated_on": "2030-01-01T00:00:00.000000Z"},
        }
        return web.Response(body=envelope(result), content_type="application/json")

    async with tiny_server(handler) as base:
        _env(monkeypatch, base)
        result = await magicwan(
            "psk",
            "generate",
            ACCOUNT,
            TUNNEL,
            "--show-psk",
            "--settle-window",
            "0",
            "--max-retries",
            "1",
        )
    assert len(psks) >= 3  # it did regenerate
    assert psks[-1] in result.out or result.code == 4, (
        f"exit {result.code}: the last PSK Cloudflare answered ({len(psks)} generated) is not "
        "on stdout and there is no journal"
    )
