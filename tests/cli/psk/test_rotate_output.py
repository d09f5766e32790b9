"""What ``magicwan psk rotate`` prints: JSON lines on stdout and people's text on stderr,
--show-psk, progress, -q/-v/-vv (never a secret), and server text escaped before printing."""

from __future__ import annotations

from pathlib import Path

import pytest

from magicwan.emulator import Emulator
from tests.support.cli import (
    TUNNELS,
    Answers,
    assert_no_psk,
    edge_psk,
    json_lines,
    magicwan,
    summary,
)

HOSTILE = "\x1b[31mred\x1b]0;owned\x07\rover"


@pytest.mark.asyncio
async def test_json_is_one_line_per_tunnel_then_a_summary_with_people_text_on_stderr(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = tmp_path / "j.jsonl"
    result = await magicwan("psk", "rotate", "--all", "--journal", str(journal), "--json")

    assert result.code == 0, result.err
    lines = json_lines(result.out)
    tunnels, [last] = lines[:-1], lines[-1:]
    assert sorted(line["tunnel_id"] for line in tunnels) == sorted(emu.tunnel_ids)
    names = {t: emu.state.tunnel(emu.account_id, t).name for t in emu.tunnel_ids}
    for line in tunnels:
        assert line["event"] == "tunnel"
        assert line["name"] == names[line["tunnel_id"]]
        assert (line["ok"], line["state"], line["attempts"], line["error"]) == (
            True,
            "rotated",
            1,
            None,
        )
        assert {"verified", "delivered", "last_generated_on", "ipsec_id"} <= set(line)
        assert "psk" not in line
    assert last["event"] == "summary"
    assert (last["requested"], last["rotated"], last["exit_status"]) == (TUNNELS, TUNNELS, 0)
    assert last["journal"] == str(journal)
    assert summary(result.err)["rotated"] == str(TUNNELS)
    assert_no_psk(result.out + result.err, emu)


@pytest.mark.asyncio
async def test_show_psk_writes_only_tunnel_and_psk_lines_to_stdout(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = str(tmp_path / "j.jsonl")
    text = await magicwan("psk", "rotate", "--all", "--journal", journal, "--show-psk")
    assert text.code == 0, text.err
    assert sorted(text.out.splitlines()) == sorted(
        f"{t} {edge_psk(emu, t)}" for t in emu.tunnel_ids
    )
    assert_no_psk(text.err, emu)

    json_run = await magicwan(
        "psk", "rotate", "--all", "--journal", journal + "2", "--show-psk", "--json"
    )
    shown = {line["tunnel_id"]: line["psk"] for line in json_lines(json_run.out)[:-1]}
    assert shown == {t: edge_psk(emu, t) for t in emu.tunnel_ids}
    assert_no_psk(json_run.err, emu)


@pytest.mark.asyncio
async def test_plain_progress_lines_when_not_a_terminal(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    result = await magicwan("psk", "rotate", "--all", "--journal", str(tmp_path / "j.jsonl"))

    assert result.code == 0
    lines = [line for line in result.err.splitlines() if line.startswith("ok ")]
    assert len(lines) == TUNNELS
    for line in lines:
        _, tunnel_id, name, stamp = line.split()
        assert tunnel_id in emu.tunnel_ids
        assert name == emu.state.tunnel(emu.account_id, tunnel_id).name
        assert stamp.startswith("20")
        assert stamp.endswith("Z")
    assert "\r" not in result.err
    assert "\x1b" not in result.err  # no colours on a pipe


@pytest.mark.asyncio
async def test_quiet_is_silent_when_all_is_well_and_verbose_shows_info(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    quiet = await magicwan("psk", "rotate", "--all", "--journal", str(tmp_path / "a"), "-q")
    assert quiet.code == 0
    assert (quiet.out, quiet.err) == ("", "")

    # A retried 5xx leaves doubt: the tunnel is read back after the settle window.
    settle = ("--settle-window", "0")
    answers.add(
        "psk_generate", status=500, code=10001, message="oops", tunnel=emu.tunnel_ids[0], times=1
    )
    plain = await magicwan(
        "psk",
        "rotate",
        emu.account_id,
        emu.tunnel_ids[0],
        "--journal",
        str(tmp_path / "b"),
        *settle,
    )
    answers.add(
        "psk_generate", status=500, code=10001, message="oops", tunnel=emu.tunnel_ids[0], times=1
    )
    verbose = await magicwan(
        "psk",
        "rotate",
        emu.account_id,
        emu.tunnel_ids[0],
        "--journal",
        str(tmp_path / "c"),
        "-v",
        *settle,
    )
    answers.add("psk_generate", status=500, code=10001, message="oops", times=10)
    failing = await magicwan(
        "psk", "rotate", "--all", "--journal", str(tmp_path / "d"), "-q", "--max-retries", "0"
    )

    assert (plain.code, verbose.code) == (0, 0), plain.err + verbose.err
    assert "INFO" not in plain.err  # a retry is not news without -v
    assert "INFO magicwan: " in verbose.err
    assert "retrying after InternalServerError" in verbose.err
    assert "DEBUG" not in verbose.err  # -vv logs every request
    assert "reading it back in 0s" in verbose.err
    assert summary(verbose.err)["verified by read-back"] == "1"
    assert failing.code == 1
    assert "summary: 6 tunnels" in failing.err  # -q still reports a failed run
    assert not any(line.startswith("ok ") for line in failing.err.splitlines())


@pytest.mark.asyncio
async def test_very_verbose_logs_requests_never_a_secret(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    result = await magicwan(
        "psk", "rotate", emu.account_id, emu.tunnel_ids[0], "--journal", str(tmp_path / "j"), "-vv"
    )
    assert result.code == 0, result.err
    assert "DEBUG magicwan: POST /accounts/" in result.err
    assert_no_psk(result.out + result.err, emu)


@pytest.mark.asyncio
async def test_server_text_and_tunnel_names_are_escaped_before_printing(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    evil = emu.state.add_tunnel(name="evil" + HOSTILE)
    answers.add("psk_generate", status=400, code=1001, message=HOSTILE, tunnel=evil.id)
    result = await magicwan("psk", "rotate", "--all", "--journal", str(tmp_path / "j"))

    assert result.code == 1
    for raw in ("\x1b", "\x07", "\r"):
        assert raw not in result.err
        assert raw not in result.out
    assert "\\x1b[31mred\\x1b]0;owned\\x07\\rover" in result.err
    assert f"{evil.id}  evil\\x1b[31m" in result.err

    as_json = await magicwan(
        "psk", "rotate", emu.account_id, evil.id, "--journal", str(tmp_path / "k"), "--json"
    )
    assert "\x1b" not in as_json.out
    line = json_lines(as_json.out)[0]
    assert line["name"] == "evil" + HOSTILE  # exact, in JSON's own escapes
    assert line["error"]["message"].endswith(HOSTILE)
    assert line["error"]["codes"] == [1001]
