"""Third review: the command line, in-process against small servers on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from magicwan.journal import Rotated
from tests.support.cli import magicwan
from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.disk import fail_journal_writes
from tests.support.tiny_server import THEIRS, applies_its_own_psk, envelope, tiny_server

pytestmark = pytest.mark.asyncio


def _env(monkeypatch: pytest.MonkeyPatch, base: str) -> None:
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", base)
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "tok-attack-0123456789")
    for name in ("CLOUDFLARE_EMAIL", "CLOUDFLARE_API_KEY"):
        monkeypatch.delenv(name, raising=False)


async def test_cli_set_another_psk_applied_and_disk_full_does_not_point_at_the_intent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `magicwan psk set ACCOUNT TUNNEL --journal FILE`. The intent line (the PSK sent) is
    # fsynced, the server answers "applied" with ANOTHER PSK, and the disk fills up just
    # then: the `rotated` line carrying Cloudflare's PSK cannot be written. The command
    # exits 4 (right) but tells the operator "The PSK is in the journal's intent line
    # ... 'magicwan journal export' shows it as pending_psk" (_single_unrecorded with
    # in_journal_intent=True): that is the PSK SENT, which the tunnel does NOT hold. The
    # operator puts it on the router and the tunnel stays down; Cloudflare's PSK, shown
    # nowhere (no --show-psk), is lost. Expected: the PSK received is not pointed at as
    # the intent's, i.e. the report says it is in no journal (or the PSK is kept).
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
    # "applied" with a PSK other than the one sent. _set builds its Validated outcome with
    # attrs.evolve(result, psk=psk): Cloudflare's PSK is replaced by the one sent; the
    # command prints the sent PSK, journals only its intent and exits 0 "validated,
    # nothing changed". The PSK the tunnel now holds (the server's word) is nowhere.
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
    # unknown), the retry gets a PSK: doubt, so _settle reads the tunnel back. The edge's
    # stamp is always a second newer than the one the generate answer carried (a clock
    # difference between the two handlers, or a hostile server): _settle regenerates,
    # MAX_VERIFY_ROUNDS times, then returns _single_failure(...) with no result: the PSK of
    # the LAST generate, which Cloudflare answered and which the tunnel most likely holds
    # (nothing contradicts it but a stamp), is never printed. No journal, not on stdout:
    # recorded nowhere, and the exit status says "failed", not "unrecorded" (4).
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
