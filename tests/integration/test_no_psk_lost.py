"""No PSK lost, even under faults: a late store, a full disk, read-backs that cannot decide.

Each test here reproduces a way a live PSK could be lost, against a real server over
loopback: the emulator with its ``late_store`` fault, a disk that fills under the journal (a real
``EFBIG`` from the kernel in a child process, and ``ENOSPC`` on chosen lines), read-backs that
cannot decide (a small hostile server), and a caller that stops reading. The rule they check:
any outcome for a tunnel that may now hold a PSK we received carries that PSK, and the SDK
never starts work it cannot record.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from magicwan import (
    JournalError,
    MagicWAN,
    OutcomeState,
    RotationFailure,
    RotationSuccess,
    read_journal,
)
from magicwan.emulator import Emulator, EmulatorState, Faults
from magicwan.journal import Rotated
from tests.support.children import start_rotation_child, wait_for_child
from tests.support.disk import fail_journal_writes
from tests.support.loopback import Tracker, make_client, serve

pytestmark = pytest.mark.asyncio


def _edge_psk(emu: Emulator, tunnel_id: str) -> str | None:
    return emu.state.current_psk(emu.account_id, tunnel_id)


# --- 1. a late store beats the retry -------------------------------------------------------


async def test_a_late_store_never_leaves_a_tunnel_on_a_psk_nobody_holds(tmp_path: Path) -> None:
    # The emulator reads the request, the client times out and retries, and the first request
    # stores its PSK later, behind the retry's back. No tunnel is reported ok=True,
    # verified=True while the edge holds the late PSK: the tunnel is read back only once the
    # settle window has passed since its last unanswered request, and regenerated on evidence.
    # The store lands a second after the request was read: after the client's timeout
    # (0.1 s), its backoff and its retry's answer, so the late PSK supersedes the retry's.
    delay = 1.0
    faults = Faults(late_store=0.3, late_store_delay=delay)
    state = EmulatorState(tunnels=20, seed=31, rate_limit=None, faults=faults)
    journal = tmp_path / "j.jsonl"
    async with serve(state) as emu, make_client(emu, timeout=0.1, max_retries=8) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id,
            emu.tunnel_ids,
            concurrency=5,
            journal=journal,
            resume=True,
            settle_window=1.5,
        )
        async with rotation:
            outcomes = [o async for o in rotation]
        # Let every store still sleeping in the emulator land before comparing.
        await asyncio.sleep(delay + 0.3)
        late = emu.state.requests.faults["late_store"]
        assert late >= 4  # the fault really happened, many times
        regenerated = [t for t in emu.tunnel_ids if len(emu.state.history(emu.account_id, t)) > 2]
        assert regenerated  # some late PSKs superseded a retry's: caught by the read-back
        records = read_journal(journal)
        ok = [o for o in outcomes if o.ok]
        assert len(ok) >= 18
        for outcome in outcomes:
            edge = _edge_psk(emu, outcome.tunnel_id)
            if outcome.ok:
                # Never "ok" with a PSK the edge does not hold.
                assert outcome.psk == edge, outcome.tunnel_id
                assert records[(emu.account_id, outcome.tunnel_id)].psk == edge
            else:
                assert isinstance(outcome, RotationFailure)
                assert outcome.psk == edge or outcome.outcome_unknown
        assert emu.state.requests.by_route["get_ipsec_tunnel"] >= 1  # read back after a window


# --- 2. the journal fails --------------------------------------------------------------------


def _start_child(emu: Emulator, tmp_path: Path, **env_extra: str) -> subprocess.Popen[bytes]:
    """The rotation child; its outcomes and summary come on a pipe (a file size limit on
    the child applies to files, not pipes), its log in ``child.log``."""
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(emu.tunnel_ids) + "\n")
    with (tmp_path / "child.log").open("ab") as log:
        return start_rotation_child(
            emu,
            tmp_path / "j.jsonl",
            ids_file,
            stdout=subprocess.PIPE,
            stderr=log,
            env={"MAGICWAN_TEST_FAST": "20", "MAGICWAN_TEST_OUTCOMES": "-", **env_extra},
        )


_wait = wait_for_child


@pytest.mark.parametrize("method", ["generate", "set"])
async def test_a_disk_that_fills_under_the_journal_loses_no_psk(
    tmp_path: Path, method: str
) -> None:
    # A real EFBIG from the kernel (RLIMIT_FSIZE, SIGXFSZ ignored) once the journal reaches
    # a few KiB. The run stops, and every live PSK is in the journal or the caller's hands.
    state = EmulatorState(tunnels=120, seed=32, rate_limit=None)
    tracker = Tracker()
    async with serve(state, tracker=tracker) as emu:
        child = _start_child(
            emu,
            tmp_path,
            # set journals whole batches of PSKs (fsynced) before sending them, and sends no
            # request once a write failed: room for the first batches' intents.
            MAGICWAN_TEST_FSIZE="6000" if method == "generate" else "40000",
            MAGICWAN_TEST_METHOD=method,
            MAGICWAN_TEST_BATCH="10",
        )
        code = await _wait(child)
        assert child.stdout is not None
        *lines, last = child.stdout.read().decode().strip().splitlines()
        child.stdout.close()
        summary = json.loads(last)
        assert code == 1, (tmp_path / "child.log").read_text()[-2000:]
        assert summary["journal_error"] is not None
        assert "File too large" in summary["journal_error"]
        held: dict[str, str] = {}
        for line in lines:
            item = json.loads(line)
            if item["psk"] is not None:
                held[item["tunnel_id"]] = item["psk"]
        journalled = {k[1]: r.psk for k, r in read_journal(tmp_path / "j.jsonl").items() if r.psk}
        changed = [t for t in emu.tunnel_ids if emu.state.tunnel(emu.account_id, t).generation]
        assert changed  # some tunnels did rotate before the disk filled
        assert len(changed) < len(emu.tunnel_ids)  # and the run stopped: no new work
        for tunnel_id in changed:
            edge = _edge_psk(emu, tunnel_id)
            # Every live PSK is in the journal or in the caller's hands, or both.
            assert edge in (journalled.get(tunnel_id), held.get(tunnel_id)), tunnel_id


async def test_rotated_lines_failing_with_enospc_stop_the_run_and_hand_every_psk_over(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the "rotated" lines fail (ENOSPC): the run stops, and every live PSK is journalled
    # or handed over (keeping going would leave every tunnel a PSK that is neither).
    fail_journal_writes(monkeypatch, lambda event: isinstance(event, Rotated))
    got: list[Any] = []

    async def consume(rotation: Any) -> None:
        async with rotation:
            async for outcome in rotation:
                got.append(outcome)

    async with make_client(emu) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id, emu.tunnel_ids, concurrency=4, journal=tmp_path / "j.jsonl"
        )
        with pytest.raises(JournalError, match="hold PSKs that are not in the journal"):
            await consume(rotation)
    generated = emu.state.requests.by_route["psk_generate"]
    assert 1 <= generated <= 4  # what was in flight when the first line failed, nothing after
    unrecorded = [o for o in got if o.state is OutcomeState.UNRECORDED]
    assert len(unrecorded) == generated == rotation.unrecorded
    for outcome in unrecorded:
        assert isinstance(outcome.error, JournalError)
        assert outcome.psk == _edge_psk(emu, outcome.tunnel_id)
    assert len(got) == len(emu.tunnel_ids)  # the rest: not attempted, nothing sent


# --- 5. a read-back that cannot decide -------------------------------------------------------

TUNNEL = "c4a7362d577a6c3019a474fd6f485823"
ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
PSKS = ["FirstPskNobodySaw000000000000001", "SecondPskTheClientGot00000000002"]


@asynccontextmanager
async def readback_server(
    generated_stamp: str | None, get: Callable[[], web.Response]
) -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A server whose first generate fails after storing (a 500), whose second answers
    with ``generated_stamp``, and whose read-back answers ``get()``."""
    hits = {"post": 0, "get": 0}

    async def generate(request: web.Request) -> web.Response:
        hits["post"] += 1
        if hits["post"] == 1:
            body = {"success": False, "errors": [{"code": 10001, "message": "oops"}]}
            return web.json_response({**body, "messages": [], "result": None}, status=500)
        result: dict[str, Any] = {"ipsec_tunnel_id": TUNNEL, "psk": PSKS[1]}
        if generated_stamp is not None:
            result["psk_metadata"] = {"last_generated_on": generated_stamp}
        return web.json_response({"success": True, "errors": [], "messages": [], "result": result})

    async def read(request: web.Request) -> web.Response:
        hits["get"] += 1
        return get()

    app = web.Application()
    base = f"/client/v4/accounts/{ACCOUNT}/magic/ipsec_tunnels/{TUNNEL}"
    app.router.add_post(base + "/psk_generate", generate)
    app.router.add_get(base, read)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/client/v4", hits
    finally:
        await runner.cleanup()


def _tunnel(stamp: Any, tunnel_id: str = TUNNEL, status: int = 200) -> Callable[[], web.Response]:
    def answer() -> web.Response:
        tunnel: dict[str, Any] = {"id": tunnel_id, "name": "t"}
        if stamp is not _NO_META:
            tunnel["psk_metadata"] = {"last_generated_on": stamp}
        ok = status < 400
        errors = [] if ok else [{"code": 10001, "message": "read-back broke"}]
        body = {"success": ok, "errors": errors, "messages": [], "result": None}
        if ok:
            body["result"] = {"ipsec_tunnel": tunnel}
        return web.json_response(body, status=status)

    return answer


_NO_META = object()
STAMP_US = "2026-11-27T10:00:00.123456Z"
STAMP_MS = "2026-11-27T10:00:00.123Z"


@pytest.mark.parametrize(
    ("generated", "get", "verified"),
    [
        (None, _tunnel(STAMP_US), False),  # the generate answer had no psk_metadata
        (STAMP_US, _tunnel(None), False),  # the read-back's stamp is null
        (STAMP_US, _tunnel(_NO_META), False),  # the read-back has no psk_metadata
        # ms against us: equal only at the coarser precision, which cannot tell a late
        # store in the same millisecond from the PSK held
        (STAMP_US, _tunnel(STAMP_MS), False),
        (STAMP_MS, _tunnel(STAMP_US), False),
        (STAMP_US, _tunnel(STAMP_US, status=500), False),  # the read-back fails
        (STAMP_US, _tunnel(STAMP_US, tunnel_id="f" * 32), False),  # answers for another tunnel
    ],
    ids=["no-meta", "null-stamp", "get-no-meta", "ms-vs-us", "us-vs-ms", "get-500", "wrong-id"],
)
async def test_a_read_back_that_proves_nothing_generates_once_more_and_withholds_none(
    tmp_path: Path,
    generated: str | None,
    get: Callable[[], web.Response],
    verified: bool,
) -> None:
    # Only proof keeps the PSK held; otherwise, the settle window over, one new PSK
    # supersedes every earlier request (not five per tunnel, the live one only in a "failed"
    # journal line).
    journal = tmp_path / "j.jsonl"
    async with readback_server(generated, get) as (base_url, hits):
        client = MagicWAN(api_token="t", base_url=base_url, rate_limit=None, max_retries=2)
        async with client:
            rotation = client.tunnels.ipsec.psk.rotate(
                ACCOUNT, [TUNNEL], journal=journal, resume=True, settle_window=0.05
            )
            async with rotation:
                (outcome,) = [o async for o in rotation]
    # One unanswered, one answered; one more when the read-back did not prove it.
    assert hits["post"] == (2 if verified else 3)
    assert hits["get"] >= 1  # (a failing GET is retried by the client)
    assert isinstance(outcome, RotationSuccess)
    assert outcome.psk == PSKS[1]
    assert outcome.verified is verified
    assert outcome.unverified is None
    record = read_journal(journal)[(ACCOUNT, TUNNEL)]
    assert record.psk == PSKS[1]
    assert not record.uncertain


# --- 8. a caller who stops reading -----------------------------------------------------------


async def test_a_loop_left_by_break_without_a_journal_keeps_every_psk(emu: Emulator) -> None:
    # After a break with journal=None, no more than 2 x concurrency more PSKs are made, and
    # every one waits in unclaimed.
    state_before = {t: emu.state.tunnel(emu.account_id, t).generation for t in emu.tunnel_ids}
    slow = Faults(latency=0.02, latency_probability=1.0)
    emu.set_faults(slow)
    async with make_client(emu) as client:
        rotation = client.tunnels.ipsec.psk.rotate(emu.account_id, emu.tunnel_ids, concurrency=2)
        claimed = []
        async for outcome in rotation:
            claimed.append(outcome)
            break
        for _ in range(50):  # let whatever was in flight come back
            await asyncio.sleep(0.02)
        await rotation.aclose()
    rotated = [
        t
        for t in emu.tunnel_ids
        if emu.state.tunnel(emu.account_id, t).generation > state_before[t]
    ]
    assert len(rotated) <= 1 + 2 * 2
    kept = {o.tunnel_id: o.psk for o in claimed + rotation.unclaimed}
    assert set(kept) == set(rotated)
    for tunnel_id in rotated:
        assert kept[tunnel_id] == _edge_psk(emu, tunnel_id)
