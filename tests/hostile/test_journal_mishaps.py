"""The journal under an unlucky operator: a clock that jumped, a hand-edited line, a journal
removed or truncated while a run writes it. A rerun neither hangs nor crashes, and a run whose
journal lost its PSKs never says "all done". Real files, the emulator or a tiny server over
loopback."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from magicwan import JournalError, MagicWANError
from magicwan.emulator import Emulator, run
from magicwan.journal import Intent, Journal, Rotated, read_journal
from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.loopback import make_client
from tests.support.tiny_server import client_of, envelope, tiny_server

pytestmark = pytest.mark.asyncio


def _uncertain_journal(path: Path, emu: Emulator, tunnel: str, when: datetime) -> None:
    """A journal left by a run whose retry made the tunnel's PSK doubtful, its lines stamped
    ``when`` by the clock of the machine that wrote them."""
    journal = Journal(path)
    journal.open()
    try:
        journal.append(Intent(account_id=emu.account_id, tunnel_id=tunnel, time=when))
        journal.append(
            Rotated(
                account_id=emu.account_id,
                tunnel_id=tunnel,
                psk=emu.state.current_psk(emu.account_id, tunnel),
                last_generated_on=emu.state.tunnel(emu.account_id, tunnel).last_generated_on,
                attempts=2,
                uncertain=True,
                time=when,
            )
        )
    finally:
        journal.close_now()


async def test_a_resume_after_the_clock_was_ahead_does_not_wait_for_the_clock(
    tmp_path: Path,
) -> None:
    # The first run's machine had its clock a day ahead (a dead RTC battery, a VM restored
    # from a snapshot, NTP fixing it mid-run). Its journal's times are a day in the future.
    # A rerun with --resume must take about settle_window, not wait until the journal's
    # "last line + settle_window" a day from now, with nothing printed.
    async with run(tunnels=1, rate_limit=None) as emu, make_client(emu) as client:
        tunnel = emu.tunnel_ids[0]
        await client.tunnels.ipsec.psk.generate(emu.account_id, tunnel)
        path = tmp_path / "j.jsonl"
        _uncertain_journal(path, emu, tunnel, datetime.now(UTC) + timedelta(days=1))
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id,
            [tunnel],
            journal=path,
            settle_window=0.2,
            resume=True,
            drain_timeout=0.5,
        )

        async def consume() -> list[object]:
            async with rotation:
                return [o async for o in rotation]

        try:
            outcomes = await asyncio.wait_for(consume(), 5)
        except TimeoutError:
            pytest.fail("the resume waits for the journal's future clock (a day), silently")
        assert len(outcomes) == 1


async def test_a_journal_line_stamped_at_the_end_of_time_is_not_a_raw_crash(
    tmp_path: Path,
) -> None:
    # A hand-edited (or clock-corrupted) journal whose last line says 9999-12-31: the
    # resume ends in an SDK error (or works), never a bare OverflowError that leaves the
    # journal open.
    async with run(tunnels=1, rate_limit=None) as emu, make_client(emu) as client:
        tunnel = emu.tunnel_ids[0]
        await client.tunnels.ipsec.psk.generate(emu.account_id, tunnel)
        path = tmp_path / "j.jsonl"
        _uncertain_journal(path, emu, tunnel, datetime(9999, 12, 31, 23, 59, tzinfo=UTC))
        # A last word from the future counts as now: the resume waits one settle window
        # (kept short here), never the distance to year 9999, and never crashes on it.
        rotation = client.tunnels.ipsec.psk.rotate(
            emu.account_id, [tunnel], journal=path, settle_window=0.2, resume=True
        )

        async def consume() -> list[object]:
            async with rotation:
                return [o async for o in rotation]

        try:
            outcomes = await asyncio.wait_for(consume(), 5)
        except MagicWANError:
            return  # refusing the journal with an SDK error is fine
        except OverflowError:
            pytest.fail("a raw OverflowError from the SDK")
        assert len(outcomes) == 1


async def test_a_journal_removed_mid_run_is_not_reported_as_all_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `psk rotate --journal-dir` under a directory that a cleanup job (tmpfiles, a cron
    # `find -delete`, an operator's `rm -rf` of the last run) empties mid-run. Writing on
    # into an inode no name reaches any more would leave every new PSK nowhere (without
    # --show-psk, not on stdout either): the run must not exit 0 saying the journal holds
    # the new PSKs.
    from tests.support.cli import cli_emulator, journalled, magicwan

    journal = tmp_path / "j.jsonl"
    async with cli_emulator(monkeypatch, tunnels=6) as (emu, answers):
        generates = 0

        async def cleanup(request: web.Request) -> None:
            nonlocal generates
            if request.path.endswith("/psk_generate"):
                generates += 1
                if generates == 3:
                    journal.unlink()

        answers.hooks.append(cleanup)
        result = await magicwan(
            "psk", "rotate", "--all", "--journal", str(journal), "--concurrency", "1"
        )
        live = {t: emu.state.current_psk(emu.account_id, t) for t in emu.tunnel_ids}
    recorded = journalled(journal, emu.account_id) if journal.exists() else {}
    lost = [t for t, psk in live.items() if psk is not None and recorded.get(t) != psk]
    if lost:
        assert result.code != 0, (
            f"exit 0 and 'journal: {journal}', but {len(lost)} live PSKs are in no file"
        )


OTHER = "d4a7362d577a6c3019a474fd6f485824"


async def test_a_journal_truncated_mid_run_is_not_reported_as_all_done(tmp_path: Path) -> None:
    # The journal truncated in place while in use: `: > j.jsonl` by an operator who
    # "clears" it, logrotate's copytruncate, a backup tool that truncates what it copied.
    # The journal no longer holds the PSKs of the tunnels rotated before the cut (nor its
    # header): the cut is noticed like a removal, and the run ends with a JournalError
    # instead of "all done".
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
