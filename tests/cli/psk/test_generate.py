"""``magicwan psk generate``: one tunnel's new PSK, recorded in the journal or shown, never
both missing; exit statuses for refusals, a failing journal, doubt and interruption."""

from __future__ import annotations

import asyncio
import io
import stat
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from magicwan import cli
from magicwan.emulator import Emulator, EmulatorState, Faults, run
from magicwan.journal import Journal
from tests.support.cli import (
    Answers,
    assert_no_psk,
    break_journal_after,
    edge_psk,
    journal_events,
    journalled,
    json_lines,
    magicwan,
)


@pytest.mark.asyncio
async def test_generate_with_journal_records_the_psk_and_prints_none(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = tmp_path / "journal.jsonl"
    tunnel = emu.tunnel_ids[0]

    result = await magicwan("psk", "generate", emu.account_id, tunnel, "--journal", str(journal))

    assert result.code == 0, result.err
    assert result.out == ""  # nothing for a program to read: the PSK is in the journal
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    lines = journal_events(journal)
    assert [e["event"] for e in lines] == ["intent", "rotated", "finished"]
    assert lines[1]["psk"] == edge_psk(emu, tunnel)
    assert f"tunnel {tunnel}: new PSK generated at 20" in result.err
    assert f"recorded in the journal {journal}" in result.err
    assert_no_psk(result.out + result.err, emu)


@pytest.mark.asyncio
async def test_generate_without_journal_or_show_psk_is_refused_before_sending(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    result = await magicwan("psk", "generate", emu.account_id, emu.tunnel_ids[0])

    assert result.code == 2
    assert "--journal FILE" in result.err
    assert "--show-psk" in result.err
    assert emu.state.requests.total == 0


@pytest.mark.asyncio
async def test_generate_show_psk_prints_the_psk_alone_on_stdout(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    tunnel = emu.tunnel_ids[0]
    result = await magicwan("psk", "generate", tunnel, "--show-psk")  # account from the env

    assert result.code == 0, result.err
    assert result.out == f"{edge_psk(emu, tunnel)}\n"
    assert_no_psk(result.err, emu)


@pytest.mark.asyncio
async def test_generate_json_is_one_line_with_the_psk_only_when_asked(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    tunnel = emu.tunnel_ids[0]
    journal = str(tmp_path / "j.jsonl")
    hidden = await magicwan("psk", "generate", tunnel, "--journal", journal, "--json")
    shown = await magicwan("psk", "generate", tunnel, "--journal", journal, "--json", "--show-psk")

    [line] = json_lines(hidden.out)
    assert line["event"] == "tunnel"
    assert (line["tunnel_id"], line["ok"], line["state"], line["attempts"]) == (
        tunnel,
        True,
        "rotated",
        1,
    )
    assert "psk" not in line
    [line] = json_lines(shown.out)
    assert line["psk"] == edge_psk(emu, tunnel)


@pytest.mark.asyncio
async def test_generate_validate_only_changes_nothing(env: tuple[Emulator, Answers]) -> None:
    emu, _ = env
    tunnel = emu.tunnel_ids[0]
    result = await magicwan("psk", "generate", emu.account_id, tunnel, "--validate-only")

    assert result.code == 0, result.err
    assert "validated" in result.err
    assert emu.state.tunnel(emu.account_id, tunnel).generation == 0


@pytest.mark.asyncio
async def test_generate_unknown_tunnel_exits_1_with_a_hint_and_journals_the_failure(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = tmp_path / "j.jsonl"
    result = await magicwan("psk", "generate", emu.account_id, "f" * 32, "--journal", str(journal))

    assert result.code == 1
    assert "NotFoundError: HTTP 404: 1002" in result.err
    assert "hint: the tunnel is not in this account" in result.err
    assert "Traceback" not in result.err
    assert [e["event"] for e in journal_events(journal)] == ["intent", "failed", "finished"]


@pytest.mark.asyncio
async def test_generate_refused_for_lack_of_permission_exits_3(
    env: tuple[Emulator, Answers],
) -> None:
    emu, answers = env
    answers.add(
        "psk_generate", status=403, code=9109, message="Unauthorized to access requested resource"
    )
    result = await magicwan("psk", "generate", emu.tunnel_ids[0], "--show-psk")

    assert result.code == 3
    assert "PermissionDeniedError: HTTP 403: 9109" in result.err
    assert "hint: the credentials lack a permission" in result.err


@pytest.mark.asyncio
@pytest.mark.parametrize("show", [False, True], ids=["hidden", "shown"])
async def test_generate_whose_journal_fails_after_the_psk_arrived_exits_4(
    env: tuple[Emulator, Answers],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    show: bool,
) -> None:
    emu, _ = env
    journal = tmp_path / "j.jsonl"
    tunnel = emu.tunnel_ids[0]
    break_journal_after(monkeypatch, journal, rotated=0)
    argv = ["psk", "generate", tunnel, "--journal", str(journal)]

    result = await magicwan(*argv, *(["--show-psk"] if show else []))

    psk = edge_psk(emu, tunnel)
    assert psk is not None  # a new PSK is live at Cloudflare
    assert result.code == 4
    assert f"tunnel {tunnel} holds a NEW PSK" in result.err
    assert "No space left on device" in result.err
    assert psk not in result.err
    if show:
        assert result.out == f"{psk}\n"  # --show-psk is honoured all the same
    else:
        assert psk not in result.out
        assert "run the command again once the journal is writable" in result.err


@pytest.mark.asyncio
async def test_generate_on_a_locked_journal_is_refused_before_sending(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    path = tmp_path / "j.jsonl"
    holder = Journal(path)
    holder.open()  # another rotation holds it
    try:
        result = await magicwan("psk", "generate", emu.tunnel_ids[0], "--journal", str(path))
        rotate = await magicwan("psk", "rotate", "--all", "--journal", str(path))
    finally:
        await holder.aclose()

    for refused in (result, rotate):
        assert refused.code == 2
        assert "in use by another rotation" in refused.err
    assert emu.state.requests.total == 0


@pytest.mark.asyncio
async def test_generate_records_an_uncertain_outcome_in_the_journal(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = tmp_path / "journal.jsonl"
    tunnel = emu.tunnel_ids[0]
    emu.set_faults(Faults(reset_after_store=1.0))
    argv = ["psk", "generate", emu.account_id, tunnel, "--journal", str(journal)]
    first = asyncio.ensure_future(magicwan(*argv, "--settle-window", "0.2"))
    while emu.state.requests.dropped == 0:
        await asyncio.sleep(0.01)
    emu.set_faults(Faults.none())  # the retry gets through: the first PSK went unseen
    result = await first
    assert result.code == 0, result.err
    rotated = [e for e in journal_events(journal) if e["event"] == "rotated"]
    assert rotated[-1]["uncertain"] is True
    assert rotated[-1]["psk"] == edge_psk(emu, tunnel)


@pytest.mark.asyncio
async def test_an_interrupted_generate_says_the_tunnel_may_hold_a_new_psk(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    emu.set_faults(Faults(latency=5.0, latency_probability=1.0))
    journal = tmp_path / "j.jsonl"
    err = io.StringIO()
    argv = ["psk", "generate", emu.tunnel_ids[0], "--journal", str(journal)]
    task = asyncio.create_task(cli.amain(argv, stdout=io.StringIO(), stderr=err))
    while not journal.exists() or '"intent"' not in journal.read_text():
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert f"interrupted: tunnel {emu.tunnel_ids[0]} may now hold a new PSK" in err.getvalue()
    emu.set_faults(Faults())


def _late_first_generate(emu_state: EmulatorState, delay: float) -> Any:
    generates = 0

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        nonlocal generates
        if request.path.endswith("/psk_generate"):
            generates += 1
            late = generates == 1
            emu_state.set_faults(
                Faults(late_store=1.0, late_store_delay=delay) if late else Faults()
            )
        response: web.StreamResponse = await handler(request)
        return response

    return middleware


@pytest.mark.asyncio
async def test_generate_whose_late_store_lands_within_the_settle_window_generates_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The first answer is lost, the retry returns B, and the first request stores A late
    # (1.6 s): the read-back after the settle window (3 s) sees a newer stamp and
    # generates again: the journal ends with the PSK the tunnel holds.
    journal = tmp_path / "j.jsonl"
    state = EmulatorState(tunnels=1, seed=12, rate_limit=None)
    async with run(
        state=state, middlewares=[_late_first_generate(state, 1.6)], shutdown_timeout=2.0
    ) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        tunnel = emu.tunnel_ids[0]
        result = await magicwan(
            "psk", "generate", tunnel, "--journal", str(journal), "--timeout", "0.3",
            "--settle-window", "3", "--json",
        )  # fmt: skip
        live = edge_psk(emu, tunnel)
    assert result.code == 0, result.err
    assert "a retry left doubt" in result.err
    assert "generating again" in result.err
    assert journalled(journal, emu.account_id) == {tunnel: live}
    [line] = json_lines(result.out)
    # Generated again once the window had passed: a certain answer nothing can supersede.
    assert line["verified"] is False
    assert [e["event"] for e in journal_events(journal)] == [
        "intent",
        "rotated",
        "intent",
        "rotated",
        "finished",
    ]
    assert live is not None
    assert live not in result.err + result.out
