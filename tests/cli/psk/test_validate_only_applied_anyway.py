"""``--validate-only`` through a gateway that drops the query, so that the server applies the
request anyway: every PSK sent or received is journalled, and a resume understands it."""

from __future__ import annotations

from pathlib import Path

import pytest

from magicwan.emulator import Emulator
from magicwan.journal import read_journal
from tests.support.cli import (
    Answers,
    edge_psk,
    emulator_behind,
    journal_events,
    journalled,
    json_lines,
    magicwan,
)
from tests.support.emulator import drops_the_query


@pytest.mark.asyncio
async def test_set_validate_only_journals_the_psk_sent_before_sending(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    tunnel = emu.tunnel_ids[0]
    journal = tmp_path / "j.jsonl"
    result = await magicwan("psk", "set", tunnel, "--validate-only", "--journal", str(journal))

    assert result.code == 0, result.err
    assert emu.state.tunnel(emu.account_id, tunnel).generation == 0  # nothing changed
    intent, finished = journal_events(journal)
    assert (intent["event"], intent["method"]) == ("intent", "set")
    assert finished["event"] == "finished"
    assert "kept in the journal" in result.err
    assert result.out == ""
    assert str(intent["psk"]) not in result.err  # kept, never printed unasked
    hidden = await magicwan("psk", "set", tunnel, "--validate-only", "--json")
    assert "psk" not in json_lines(hidden.out)[0]
    assert "kept nowhere" in hidden.err


@pytest.mark.asyncio
async def test_set_validate_only_applied_anyway_leaves_a_psk_resume_understands(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    journal = tmp_path / "j.jsonl"
    async with emulator_behind(monkeypatch, drops_the_query) as emu:
        tunnel = emu.tunnel_ids[0]
        result = await magicwan(
            "psk", "set", tunnel, "--validate-only", "--journal", str(journal), "--show-psk"
        )
        live = edge_psk(emu, tunnel)
        assert result.code == 0, result.err
        assert result.out == f"{live}\n"
        [record] = read_journal(journal).values()
        assert record.pending_psk == live
        assert record.in_flight
        # --resume with --method set resends the same PSK: the journal then records it.
        resumed = await magicwan(
            "psk", "rotate", emu.account_id, tunnel, "--method", "set",
            "--journal", str(journal), "--resume",
        )  # fmt: skip
        assert resumed.code == 0, resumed.err
        assert edge_psk(emu, tunnel) == live
        assert journalled(journal, emu.account_id) == {tunnel: live}


@pytest.mark.asyncio
async def test_rotate_set_validate_only_journals_the_psks_sent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    journal = tmp_path / "j.jsonl"
    async with emulator_behind(monkeypatch, drops_the_query) as emu:
        result = await magicwan(
            "psk",
            "rotate",
            "--all",
            "--method",
            "set",
            "--validate-only",
            "--journal",
            str(journal),
        )
        live = {t: edge_psk(emu, t) for t in emu.tunnel_ids}
    assert result.code == 0, result.err
    assert all(live.values())  # the server applied them all
    pending = {t: r.pending_psk for (_, t), r in read_journal(journal).items()}
    assert pending == live
    assert f"journal: {journal} (mode 0600) keeps the PSKs sent" in result.err
    assert not any(psk in result.err + result.out for psk in live.values() if psk)


@pytest.mark.asyncio
async def test_rotate_generate_validate_only_opens_no_journal(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    journal = tmp_path / "j.jsonl"
    result = await magicwan("psk", "rotate", "--all", "--validate-only", "--journal", str(journal))
    assert result.code == 0, result.err
    assert not journal.exists()


@pytest.mark.asyncio
async def test_generate_validate_only_answered_with_a_psk_journals_it_and_exits_4(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    journal = tmp_path / "j.jsonl"
    async with emulator_behind(monkeypatch, drops_the_query) as emu:
        tunnel = emu.tunnel_ids[0]
        result = await magicwan(
            "psk", "generate", tunnel, "--validate-only", "--journal", str(journal), "--json"
        )
        live = edge_psk(emu, tunnel)
        shown = await magicwan("psk", "generate", tunnel, "--validate-only", "--show-psk")
        again = edge_psk(emu, tunnel)
    assert result.code == 4
    assert journalled(journal, emu.account_id) == {tunnel: live}
    [line] = json_lines(result.out)
    assert (line["state"], line["ok"]) == ("unrecorded", False)
    assert "psk" not in line
    assert live is not None
    assert live not in result.err
    assert "generated a NEW PSK anyway" in result.err
    assert shown.code == 4
    assert shown.out == f"{again}\n"
