"""Outside review: a full disk under both the journal and stdout."""

from __future__ import annotations

import errno
import io
from pathlib import Path

import pytest

from magicwan import cli
from magicwan.journal import Rotated
from tests.support.cli import cli_emulator
from tests.support.disk import fail_journal_writes

pytestmark = pytest.mark.asyncio


class FullFile(io.StringIO):
    """stdout redirected to a file on a full disk (``>> rotations.jsonl``, or /dev/full):
    every write fails with ENOSPC, not EPIPE."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


async def test_a_full_disk_under_journal_and_stdout_still_exits_4_naming_the_tunnels(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The README's cron line: `magicwan psk rotate --all --journal-dir /var/lib/... --json
    # -q >> /var/log/magicwan/rotations.jsonl`. /var fills up: the journal cannot record
    # a new PSK (the tunnel is `unrecorded`: live at Cloudflare, in no journal) and the
    # JSON line for it cannot be written either. Only a closed pipe (EPIPE) is handled as
    # "stdout closed"; ENOSPC on stdout escapes the runner as an unexpected OSError: a
    # traceback, no summary, the unrecorded tunnels named nowhere, and exit 1 ("some
    # tunnels failed"), not 4 ("new PSKs are live at Cloudflare but the journal could
    # not record them"). Expected: a stdout that fails to write is handled like a closed
    # one; the run still says on stderr which tunnels are unrecorded and exits 4.
    path = tmp_path / "j.jsonl"
    fail_journal_writes(monkeypatch, lambda event: isinstance(event, Rotated))
    async with cli_emulator(monkeypatch, tunnels=2) as (emu, _):
        err = io.StringIO()
        code: int | str
        try:
            code = await cli.amain(
                ["psk", "rotate", "--all", "--journal", str(path), "--json", "-q"],
                stdout=FullFile(),
                stderr=err,
                stdin=io.StringIO(""),
            )
        except OSError as exc:  # the installed `magicwan` prints a traceback, exits 1
            code = f"raised {exc!r}"
        live = [t for t in emu.tunnel_ids if emu.state.history(emu.account_id, t)]
    assert live  # a new PSK is live at Cloudflare and in no journal
    assert code == 4, f"exit {code}: {err.getvalue()[-600:]!r}"
    assert all(tunnel in err.getvalue() for tunnel in live)
