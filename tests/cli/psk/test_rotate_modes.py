"""``magicwan psk rotate --dry-run``, ``--validate-only`` and ``--method set``: what each sends,
and what each changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from magicwan.emulator import Emulator
from tests.support.cli import (
    TUNNELS,
    Answers,
    edge_psk,
    journal_events,
    journalled,
    json_lines,
    magicwan,
    summary,
)


@pytest.mark.asyncio
async def test_dry_run_sends_nothing_but_the_tunnel_list(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = tmp_path / "j.jsonl"
    assert (
        await magicwan("psk", "generate", emu.tunnel_ids[0], "--journal", str(journal))
    ).code == 0
    before = emu.state.requests.total

    text = await magicwan("psk", "rotate", "--all", "--dry-run")
    resumed = await magicwan(
        "psk", "rotate", "--all", "--dry-run", "--json", "--journal", str(journal), "--resume"
    )

    assert (text.code, resumed.code) == (0, 0), text.err + resumed.err
    assert emu.state.requests.total == before + 2
    assert emu.state.requests.by_route["list_ipsec_tunnels"] == 2
    assert len(text.out.splitlines()) == TUNNELS
    assert "6 tunnel(s) would be rotated" in text.err
    assert "nothing changed" in text.err
    lines = json_lines(resumed.out)
    states = {line["tunnel_id"]: line["state"] for line in lines[:-1]}
    assert states.pop(emu.tunnel_ids[0]) == "would_skip"
    assert set(states.values()) == {"would_rotate"}
    summary_line = {k: v for k, v in lines[-1].items() if k not in ("ts", "run_id", "account_id")}
    assert summary_line.pop("estimate")["tunnels"] == 5
    assert summary_line.pop("journal") == str(journal)  # the journal it read
    assert summary_line == {"event": "summary", "dry_run": True, "would_rotate": 5, "would_skip": 1}
    assert len(journal_events(journal)) == 3  # untouched: psk generate's intent, rotated, finished


@pytest.mark.asyncio
async def test_validate_only_costs_a_request_per_tunnel_and_changes_nothing(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    result = await magicwan("psk", "rotate", "--all", "--validate-only")

    assert result.code == 0, result.err
    assert summary(result.err)["validated"] == str(TUNNELS)
    assert emu.state.requests.by_route["psk_generate"] == TUNNELS
    assert emu.state.total_generations() == 0


@pytest.mark.asyncio
async def test_method_set_sends_batches_of_psks_journalled_before_sending(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = tmp_path / "j.jsonl"
    result = await magicwan(
        "psk", "rotate", "--all", "--method", "set", "--batch-size", "4", "--journal", str(journal)
    )

    assert result.code == 0, result.err
    assert emu.state.requests.by_route["psk_set"] == 2  # 6 tunnels, 4 a batch
    assert emu.state.requests.by_route["psk_generate"] == 0
    assert journalled(journal, emu.account_id) == {t: edge_psk(emu, t) for t in emu.tunnel_ids}
    intents = [e for e in journal_events(journal) if e["event"] == "intent"]
    assert {e["psk"] for e in intents} == {edge_psk(emu, t) for t in emu.tunnel_ids}

    wrong = await magicwan("psk", "rotate", "--all", "--batch-size", "4", "--journal", "x")
    assert wrong.code == 2
    assert "--batch-size applies to --method set" in wrong.err
