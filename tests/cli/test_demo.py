"""``magicwan demo`` (``magicwan.cli.demo``): the main job against the embedded emulator."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.support.cli import magicwan, summary


@pytest.mark.asyncio
@pytest.mark.parametrize("faults", [False, True])
async def test_demo_rotates_and_verifies_every_tunnel(tmp_path: Path, faults: bool) -> None:
    journal = tmp_path / "demo.jsonl"
    argv = ["demo", "--tunnels", "50", "--latency", "0", "--journal", str(journal)]
    result = await magicwan(*argv, *(["--faults"] if faults else []))

    assert result.code == 0, result.out + result.err
    assert "verified: 50/50 journalled PSKs match the emulator" in result.err
    assert summary(result.err)["rotated"] == "50"
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    assert result.out == ""
    if faults:
        assert "injected fault" in result.err


@pytest.mark.asyncio
async def test_demo_needs_no_credentials_and_refuses_a_used_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "must-not-matter")
    notes = tmp_path / "notes"
    notes.write_text("x\n")
    refused = await magicwan("demo", "--tunnels", "2", "--journal", str(notes))
    quiet = await magicwan(
        "demo", "--tunnels", "3", "--latency", "0", "-q", "--journal", str(tmp_path / "j")
    )

    assert refused.code == 2
    assert "is not a magicwan journal" in refused.err
    assert quiet.code == 0, quiet.err
    assert (quiet.out, quiet.err) == ("", "")
