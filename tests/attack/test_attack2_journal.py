"""Second review: an unlucky operator and the journal file. Real files, small servers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from magicwan import JournalError
from magicwan.journal import read_journal
from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.tiny_server import client_of, envelope, tiny_server

pytestmark = pytest.mark.asyncio

OTHER = "d4a7362d577a6c3019a474fd6f485824"


async def test_a_journal_truncated_mid_run_is_not_reported_as_all_done(tmp_path: Path) -> None:
    # The first review made "a journal removed while in use" fail the next fsync
    # (_still_there compares inodes). Truncating it in place keeps the inode: `: > j.jsonl`
    # by an operator who "clears" it, logrotate's copytruncate, a backup tool that
    # truncates what it copied. With O_APPEND the rotation goes on writing at the new end,
    # every fsync succeeds, every outcome is ok=True, and the journal no longer holds the
    # PSKs of the tunnels rotated before the cut (nor its header). A rerun with --resume
    # rotates them again; `journal export` hands out an incomplete set; a crash now loses
    # them. Expected: the cut is noticed like a removal (the SDK knows how many bytes it
    # wrote), and the run ends with a JournalError instead of "all done".
    path = tmp_path / "j.jsonl"
    served: dict[str, str] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        tunnel = request.path.split("/")[-2]
        if tunnel == OTHER:
            os.truncate(path, 0)  # meanwhile, the operator: `: > j.jsonl`
        psk = f"psk-of-{tunnel[:8]}-0123456789abcdef"
        served[tunnel] = psk
        result = {
            "ipsec_tunnel_id": tunnel,
            "psk": psk,
            "psk_metadata": {"last_generated_on": "2030-01-01T00:00:00.123456Z"},
        }
        return web.Response(body=envelope(result), content_type="application/json")

    outcomes: list[Any] = []
    raised: JournalError | None = None
    async with tiny_server(handler) as base, client_of(base) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            ACCOUNT, [TUNNEL, OTHER], concurrency=1, journal=path
        )
        try:
            async with rotation:
                async for outcome in rotation:
                    outcomes.append(outcome)
        except JournalError as exc:
            raised = exc
    assert served.keys() == {TUNNEL, OTHER}
    records = read_journal(path)
    kept = {key[1]: record.psk for key, record in records.items()}
    lost = [t for t, psk in served.items() if kept.get(t) != psk]
    all_ok = all(o.ok for o in outcomes)
    assert not (lost and all_ok and raised is None), (
        f"every outcome ok, no JournalError, yet the journal lost the PSKs of {lost}"
    )


async def test_a_resumed_set_whose_resend_is_refused_still_carries_the_psk_sent_before(
    tmp_path: Path,
) -> None:
    # Run 1 (method="set") fsynced an intent with PSK P, sent the request, and was killed
    # (kill -9, a power cut) before the answer was recorded: the tunnel may hold P. Run 2
    # resumes with the same journal and resends P, and this time the request is refused
    # with a certain error (a 400: the token lost a scope, the API changed, a tunnel is
    # being edited). _send_set only replaces `held` by the PSK sent when the error is
    # outcome_unknown, so the outcome is "failed", outcome_unknown=False, carrying no PSK:
    # the caller is told nothing changed for this tunnel, although run 1 may have put P
    # there. README: "Any outcome for a tunnel that may now hold a PSK we ... sent carries
    # that PSK".
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
