"""``magicwan demo`` (``magicwan.cli.demo``): the main job against the embedded emulator."""

from __future__ import annotations

import stat
import tempfile
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


@pytest.mark.asyncio
async def test_demo_deletes_its_temporary_journal_and_keeps_a_given_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --journal, the emulated PSKs go with the demo's temporary directory."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    temporary = await magicwan("demo", "--tunnels", "3", "--latency", "0")
    given = tmp_path / "kept" / "demo.jsonl"
    given.parent.mkdir()
    kept = await magicwan("demo", "--tunnels", "3", "--latency", "0", "--journal", str(given))

    assert temporary.code == 0, temporary.err
    assert "verified: 3/3 journalled PSKs match the emulator" in temporary.err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept"]
    assert "(temporary: deleted when the demo ends)" in temporary.err
    assert temporary.err.rstrip().endswith(
        "deleted the demo's temporary journal (pass --journal FILE to keep one)"
    )
    assert kept.code == 0, kept.err
    assert summary(kept.err)["rotated"] == "3"
    assert kept.err.rstrip().endswith(f"journal kept: {given}")
    assert "temporary" not in kept.err
