"""Outside review: `journal prune` after the clock went back."""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from pathlib import Path

import pytest

from magicwan.journal import read_journal
from tests.support.cli import cli_emulator, magicwan

pytestmark = pytest.mark.asyncio


class _Yesterday(datetime):
    """``datetime`` whose ``now`` is a day behind: a machine booted before NTP fixed its
    clock (no RTC, a VM restored from a snapshot)."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> _Yesterday:
        real = datetime.now(tz)
        return cls.fromtimestamp((real - timedelta(days=1)).timestamp(), tz)


async def test_prune_after_a_clock_step_back_keeps_the_journal_with_the_live_psk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Two scheduled runs on one --journal-dir. The second runs while the machine's clock
    # is a day behind (the README's timer has Persistent=true: it fires at boot, before
    # time sync). Its journal's header and lines are stamped "yesterday", so `journal
    # prune --keep 1` ranks it as the OLDER journal, takes run one's records as each
    # tunnel's newest PSK, and removes run two's journal: the only copy of the PSKs the
    # edge holds now (Cloudflare's own `last_generated_on` stamps, also journalled, say
    # run two's are newer). Expected: prune never removes the journal holding the PSK
    # the edge holds; here, `journal export DIR` still gives each tunnel's live PSK.
    journals = tmp_path / "journals"
    rotate = ["psk", "rotate", "--all", "--journal-dir", str(journals), "-q"]
    async with cli_emulator(monkeypatch, tunnels=2) as (emu, _):
        assert (await magicwan(*rotate)).code == 0
        with monkeypatch.context() as clock:
            clock.setattr("magicwan.journal.datetime", _Yesterday)
            clock.setattr("magicwan.cli.common.datetime", _Yesterday)
            assert (await magicwan(*rotate)).code == 0
        pruned = await magicwan("journal", "prune", str(journals), "--keep", "1")
        live = {t: emu.state.current_psk(emu.account_id, t) for t in emu.tunnel_ids}
    kept: set[str | None] = set()
    for path in journals.glob("*.jsonl"):
        kept |= {record.psk for record in read_journal(path).values()}
    lost = sorted(t for t, psk in live.items() if psk not in kept)
    assert not lost, f"prune removed the only copy of the live PSK of {lost}: {pruned.err!r}"
