"""Outside review: a server whose bulk-set answer echoes another PSK than the one it applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from magicwan import MagicWAN
from magicwan.emulator import run
from magicwan.journal import read_journal
from tests.support.cli import magicwan
from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.tiny_server import envelope, tiny_server

pytestmark = pytest.mark.asyncio

#: What a gateway (or an API that hides secrets in its answers) echoes instead of the PSK.
MASKED = "*" * 32


@web.middleware
async def masks_applied_psks(request: web.Request, handler: Any) -> web.StreamResponse:
    """The emulator applies the PSKs sent; the answer shows each as ``MASKED``."""
    response: web.StreamResponse = await handler(request)
    if not (request.path.endswith("/ipsec_tunnels/psk") and response.status == 200):
        return response
    assert isinstance(response, web.Response)
    assert isinstance(response.body, bytes)
    body = json.loads(response.body)
    for item in body["result"]["successfully_applied_psks"].values():
        item["psk"] = MASKED
    return web.json_response(body)


async def test_a_set_answer_echoing_another_psk_never_loses_the_psk_sent(tmp_path: Path) -> None:
    # rotate(method="set", journal=J). The server applies the PSK sent (S) but its answer
    # echoes another one (here a mask). Run 1 fails the tunnel and carries, and journals
    # in a `rotated` line, only the echoed PSK; that `rotated` line clears the intent's
    # pending PSK in read_journal, so S is now in no outcome and in nothing a rerun reads
    # (only in a raw intent line the fold has dropped). The resume (resume=True) reads
    # the tunnel back: the edge's stamp is the stamp of the set that applied S, equal to
    # the echoed answer's, so it hands over a `skipped`, ok, *verified* outcome with the
    # echoed PSK, which the edge does not hold. The tunnel runs on S forever, and the
    # journal and both runs say it holds the mask. Expected: when the answer differs
    # from what was sent, S is kept (in the outcome or as the journal's pending PSK) and
    # a rerun resolves the doubt (resends) instead of verifying the echo.
    path = tmp_path / "set.jsonl"
    async with run(tunnels=2, rate_limit=None, middlewares=[masks_applied_psks]) as emu:
        tunnel = emu.tunnel_ids[0]
        client = MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={})
        async with client:
            psk = client.tunnels.ipsec.psk
            first = psk.rotate(emu.account_id, [tunnel], method="set", journal=path)
            async with first:
                run_one = [outcome async for outcome in first]
            second = psk.rotate(
                emu.account_id, [tunnel], method="set", journal=path, resume=True, settle_window=0
            )
            async with second:
                run_two = [outcome async for outcome in second]
        edge = emu.state.current_psk(emu.account_id, tunnel)
    assert edge is not None
    assert edge != MASKED
    record = read_journal(path)[(emu.account_id.lower(), tunnel.lower())]
    wrong = [o for o in run_two if o.ok and o.psk != edge]
    assert not wrong, (
        f"the resume hands over {wrong[0].state.value} (ok, verified="
        f"{getattr(wrong[0], 'verified', None)}) with a PSK the edge does not hold"
    )
    kept = {o.psk for o in run_one + run_two} | {record.psk, record.pending_psk}
    assert edge in kept, "the PSK the edge holds is in no outcome and nowhere a rerun reads"


async def test_a_set_answer_keyed_by_the_psk_never_prints_the_psk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `magicwan psk set ACCOUNT TUNNEL --journal J` (no --show-psk) against a server whose
    # bulk-set answer keys its refusal by the offending value instead of the tunnel id:
    # `"unapplied_psks": {"<the PSK sent>": "invalid psk"}` (an API that quotes its input
    # the way the README says a reason may; the SDK redacts the PSKs sent from the
    # *reasons*, not from the keys). _set_converter raises UnexpectedResponseError(
    # f"answer refuses tunnel {key!r}, not sent"): the PSK, in clear, in the error
    # message, which the command prints on stderr (and a rotation puts in its `failed`
    # journal line, its JSON line and the log). Expected: no PSK sent appears in any
    # error message; the answer is refused without quoting it.
    async def keyed_by_psk(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        refused = {item["psk"]: "invalid psk" for item in body["psks"]}
        result = {"successfully_applied_psks": {}, "unapplied_psks": refused}
        return web.Response(body=envelope(result), content_type="application/json")

    path = tmp_path / "j.jsonl"
    async with tiny_server(keyed_by_psk) as base:
        monkeypatch.setenv("CLOUDFLARE_BASE_URL", base)
        monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "tok-attack-0123456789")
        result = await magicwan("psk", "set", ACCOUNT, TUNNEL, "--journal", str(path))
    sent = {record.pending_psk for record in read_journal(path).values()} - {None}
    assert sent  # the intent line holds the PSK sent
    printed = [psk for psk in sent if psk is not None and psk in result.out + result.err]
    assert not printed, f"exit {result.code}: the PSK sent is printed: {result.err!r}"
