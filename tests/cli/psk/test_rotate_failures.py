"""``magicwan psk rotate`` when tunnels fail: 429s, a token that may not rotate, a journal that
fails mid-run; the exit status, the hints (only for what a rerun fixes) and the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from magicwan.emulator import Emulator
from tests.support.cli import (
    TUNNELS,
    Answers,
    break_journal_after,
    edge_psk,
    json_lines,
    magicwan,
    summary,
)


@pytest.mark.asyncio
async def test_a_long_429_block_stops_the_run_with_one_line_and_one_group(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    emu.state.add_tunnels(count=24)  # 30 tunnels
    answers.add(
        "psk_generate", status=429, code=971, message="Please wait", headers={"Retry-After": "120"}
    )
    result = await magicwan(
        "psk", "rotate", "--all", "--journal", str(tmp_path / "j"), "--concurrency", "4"
    )

    assert result.code == 1
    warnings = [line for line in result.err.splitlines() if "rate limit stopped the run" in line]
    assert len(warnings) == 1
    assert "to wait 120s, more than --max-retry-after 60s" in warnings[0]
    assert "--resume" in warnings[0]
    rows = summary(result.err)
    failed, not_attempted = int(rows["failed"]), int(rows["not attempted"])
    assert failed + not_attempted == 30
    assert not_attempted >= 20  # no new tunnel after the block was seen
    assert answers.answered <= 4  # those in flight; the cooldown kept the rest from asking
    full = [line for line in result.err.splitlines() if "RateLimitError: HTTP 429" in line]
    assert len(full) == 2  # the first tunnel's line and the summary's group
    assert f"  {failed} tunnel" in result.err
    assert "(as above)" in result.err or failed == 1


@pytest.mark.asyncio
async def test_a_short_429_is_waited_out_and_logged_at_info_with_v(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    _, answers = env
    answers.add(
        "psk_generate", status=429, code=971, message="wait", headers={"Retry-After": "1"}, times=1
    )
    result = await magicwan(
        "psk", "rotate", "--all", "--journal", str(tmp_path / "j"), "--max-retry-after", "5", "-v"
    )
    assert result.code == 0, result.err
    assert "INFO magicwan: " in result.err
    assert "rate limited by the server; every call waits 1.0s" in result.err
    assert summary(result.err)["rotated"] == str(TUNNELS)


@pytest.mark.asyncio
async def test_hints_only_for_what_a_rerun_fixes(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    gone, flaky = emu.tunnel_ids[:2]
    answers.add(
        "psk_generate", status=404, code=1002, message="ipsec_tunnel not found", tunnel=gone
    )
    not_found = await magicwan(
        "psk", "rotate", "--all", "--journal", str(tmp_path / "a"), "--max-retries", "0"
    )
    answers.clear()
    answers.add("psk_generate", status=503, code=10001, message="busy", tunnel=flaky)
    server = await magicwan(
        "psk", "rotate", "--all", "--journal", str(tmp_path / "b"), "--max-retries", "0"
    )

    assert not_found.code == 1
    assert "1 tunnel (failed): NotFoundError: HTTP 404: 1002" in not_found.err
    assert "hint: the tunnel is not in this account" in not_found.err
    assert "to finish" not in not_found.err  # a rerun cannot fix a 404
    assert server.code == 1
    assert "to finish: magicwan psk rotate --all --max-retries 0 --journal" in server.err
    assert server.err.rstrip().endswith(f"--journal {tmp_path / 'b'} --resume")


@pytest.mark.asyncio
async def test_a_token_that_may_not_rotate_halts_and_exits_3(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    emu.state.add_tunnels(count=14)
    answers.add(
        "psk_generate", status=403, code=9109, message="Unauthorized to access requested resource"
    )
    result = await magicwan(
        "psk", "rotate", "--all", "--journal", str(tmp_path / "j"), "--concurrency", "1"
    )

    assert result.code == 3
    rows = summary(result.err)
    assert rows["failed"] == "5"  # --halt-after 5: the default
    assert rows["not attempted"] == "15"
    assert "hint: the credentials lack a permission" in result.err
    assert "to finish" not in result.err or "not attempted" in result.err


@pytest.mark.asyncio
@pytest.mark.parametrize("show", [False, True], ids=["hidden", "shown"])
async def test_a_journal_failing_mid_run_exits_4_and_never_drops_a_psk_silently(
    env: tuple[Emulator, Answers],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    show: bool,
) -> None:
    emu, _ = env
    journal = tmp_path / "j.jsonl"
    break_journal_after(monkeypatch, journal, rotated=2)
    result = await magicwan(
        "psk",
        "rotate",
        "--all",
        "--journal",
        str(journal),
        "--concurrency",
        "1",
        "--json",
        *(["--show-psk"] if show else []),
    )

    assert result.code == 4
    lines = json_lines(result.out)
    unrecorded = [line for line in lines if line.get("state") == "unrecorded"]
    assert unrecorded
    assert lines[-1]["unrecorded"] == len(unrecorded)
    assert lines[-1]["exit_status"] == 4
    for line in unrecorded:
        psk = edge_psk(emu, line["tunnel_id"])
        assert psk is not None
        assert line["tunnel_id"] in result.err
        assert psk not in result.err
        if show:
            assert line["psk"] == psk
        else:
            assert psk not in result.out
    assert "hold a NEW PSK that the journal could not record" in result.err


@pytest.mark.asyncio
async def test_the_summary_collapses_identical_failures(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    _, answers = env
    answers.add("psk_generate", status=500, code=10001, message="Internal server error")
    result = await magicwan(
        "psk",
        "rotate",
        "--all",
        "--journal",
        str(tmp_path / "j"),
        "--max-retries",
        "0",
        "--halt-after",
        "off",
        "--json",
    )
    assert result.code == 1
    [group] = json_lines(result.out)[-1]["failures"]
    assert group["count"] == TUNNELS
    assert group["error"]["type"] == "InternalServerError"
    assert group["rerun_fixes"] is True
    assert result.err.count("InternalServerError: HTTP 500") == 2  # first line + the group
    assert f"{TUNNELS} tunnels (failed): InternalServerError" in result.err
