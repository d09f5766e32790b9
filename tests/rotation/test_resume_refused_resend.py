"""A resume whose resend of the PSK a killed run sent is refused: the tunnel may still hold that
PSK, so every failure carries it, on every rerun. Tiny servers on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from magicwan.journal import Intent, Journal
from magicwan.rotation import RotationOutcome
from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.tiny_server import client_of, envelope, tiny_server

pytestmark = pytest.mark.asyncio

RUN1_PSK = "run1-psk-sent-0123456789abcdefgh"


async def _refuses_each_tunnel(request: web.Request) -> web.StreamResponse:
    """A bulk set answered 200, every tunnel in unapplied_psks (a certain refusal)."""
    body = await request.json()
    unapplied = {item["id"]: "tunnel is being modified, try again later" for item in body["psks"]}
    result = {"successfully_applied_psks": {}, "unapplied_psks": unapplied}
    return web.Response(body=envelope(result), content_type="application/json")


async def _rerun(base: str, path: Path) -> RotationOutcome:
    async with client_of(base, max_retries=0) as client:
        rotation = client.tunnels.ipsec.psk.rotate(ACCOUNT, [TUNNEL], method="set", journal=path)
        async with rotation:
            [outcome] = [o async for o in rotation]
    return outcome


async def test_a_second_refused_resend_still_carries_the_psk_run_one_may_have_set(
    tmp_path: Path,
) -> None:
    # Run 1: rotate(method="set", journal=J) fsyncs the intent with its PSK, sends it, and
    # is killed before the answer: the tunnel may hold that PSK. Run 2 resumes, resends
    # the same PSK, Cloudflare refuses it ("unapplied"): the failure carries RUN1_PSK. Run 3
    # resumes again (the operator retries later) and is refused again. Nothing has changed
    # since run 2: the tunnel may still hold RUN1_PSK, so this failure carries it too
    # (SECURITY.md: an outcome carries every PSK the tunnel may hold). The doubt of a kill
    # survives every rerun, not just the first.
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.open()
    journal.append(Intent(account_id=ACCOUNT, tunnel_id=TUNNEL, method="set", psk=RUN1_PSK))
    await journal.aclose()

    async with tiny_server(_refuses_each_tunnel) as base:
        second = await _rerun(base, path)
        third = await _rerun(base, path)
    assert not second.ok
    assert second.result is not None
    assert second.result.psk == RUN1_PSK  # the first rerun
    assert not third.ok
    carried = third.result.psk if third.result is not None else None
    assert carried == RUN1_PSK, (
        f"run 3: {third.error}; no PSK carried, although nothing settled the doubt run 1 left "
        "(run 2 carried it)"
    )


async def test_a_resumed_set_whose_resend_is_refused_still_carries_the_psk_sent_before(
    tmp_path: Path,
) -> None:
    # Run 1 (method="set") fsynced an intent with PSK P, sent the request, and was killed
    # (kill -9, a power cut) before the answer was recorded: the tunnel may hold P. Run 2
    # resumes with the same journal and resends P, and this time the request is refused
    # with a certain error (a 400: the token lost a scope, the API changed, a tunnel is
    # being edited). Run 1 may have put P on the tunnel, so the failure carries P (README:
    # "Any outcome for a tunnel that may now hold a PSK we ... sent carries that PSK").
    from magicwan.journal import Intent, Journal

    pending = "pending-set-psk-0123456789abcdef"
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.open()
    try:
        journal.append(Intent(account_id=ACCOUNT, tunnel_id=TUNNEL, method="set", psk=pending))
    finally:
        journal.close_now()

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        refusal = {"success": False, "errors": [{"code": 1000, "message": "no"}], "messages": []}
        return web.json_response(refusal, status=400)

    async with tiny_server(handler) as base, client_of(base) as client:
        rotation = client.tunnels.ipsec.psk.rotate(ACCOUNT, [TUNNEL], method="set", journal=path)
        async with rotation:
            [outcome] = [o async for o in rotation]
    assert not outcome.ok
    assert outcome.psk == pending or outcome.outcome_unknown, (
        f"{type(outcome.error).__name__}, outcome_unknown=False, psk "
        f"{'None' if outcome.psk is None else 'another'}: run 1 may have set the pending PSK"
    )
