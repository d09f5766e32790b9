"""``python -m magicwan.emulator`` as a real subprocess, and its argument parsing."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import sys
from pathlib import Path

import aiohttp
import attrs
import pytest

from magicwan.emulator import FaultKind, Faults
from magicwan.emulator.__main__ import build_parser, faults_from_args
from magicwan.journal import read_journal
from tests.support.emulator import SUCCESS, call

#: The block on stdout: exactly these, in this order (ARCH.md).
EXPORTED = ["CLOUDFLARE_BASE_URL", "CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID"]


@attrs.frozen
class Started:
    proc: asyncio.subprocess.Process
    block: str  # stdout's lines, verbatim
    printed: dict[str, str]  # what sourcing the block sets

    @property
    def admin_url(self) -> str:
        return self.printed["CLOUDFLARE_BASE_URL"].removesuffix("/client/v4") + "/__emulator__"


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}


async def _start(*args: str) -> Started:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "magicwan.emulator",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_clean_env(),
    )
    assert proc.stdout is not None
    lines: list[str] = []
    printed: dict[str, str] = {}
    try:
        while len(lines) < len(EXPORTED):
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=15)
            assert line, "the emulator exited before printing its address"
            text = line.decode()
            lines.append(text)
            words = shlex.split(text)
            assert len(words) == 2, text
            assert words[0] == "export", text
            key, _, value = words[1].partition("=")
            printed[key] = value
    except BaseException:
        proc.kill()
        await proc.communicate()
        raise
    return Started(proc, "".join(lines), printed)


async def _stop(proc: asyncio.subprocess.Process, signum: int) -> tuple[int, str, str]:
    proc.send_signal(signum)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=15)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


@pytest.mark.asyncio
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_cli_prints_its_address_serves_and_exits_cleanly(signum: int) -> None:
    started = await _start("--port", "0", "--tunnels", "3")
    printed = started.printed
    assert list(printed) == EXPORTED
    base_url = printed["CLOUDFLARE_BASE_URL"]
    assert base_url.startswith("http://127.0.0.1:")
    assert base_url.endswith("/client/v4")
    assert not base_url.startswith("http://127.0.0.1:0/")
    assert printed["CLOUDFLARE_API_TOKEN"] == "emulator-token"
    account = printed["CLOUDFLARE_ACCOUNT_ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", account)
    try:
        async with aiohttp.ClientSession() as session:
            auth = {"Authorization": f"Bearer {printed['CLOUDFLARE_API_TOKEN']}"}
            url = f"{base_url}/accounts/{account}/magic/ipsec_tunnels"
            status, headers, body = await call(session, "GET", url, headers=auth)
            assert status == 200
            assert len(body["result"]["ipsec_tunnels"]) == 3
            assert headers["Ratelimit-Policy"] == '"default";q=1200;w=300'
            tunnel = body["result"]["ipsec_tunnels"][0]["id"]
            status, _, body = await call(
                session, "POST", f"{url}/{tunnel}/psk_generate", json={}, headers=auth
            )
            assert status == 200
            SUCCESS.validate(body)
            _, _, state = await call(session, "GET", f"{started.admin_url}/state")
            assert state["accounts"][account]["tunnels"][tunnel]["psk"] == body["result"]["psk"]
    finally:
        returncode, stdout, stderr = await _stop(started.proc, signum)
    assert returncode == 0, stderr
    assert "Traceback" not in stderr
    assert stdout == ""  # nothing after the block
    # Hints for people: on stderr, as shell comments, with the other credential scheme.
    hints = stderr.splitlines()
    assert hints
    assert all(line.startswith("#") for line in hints), hints
    assert f"# admin API (no auth): {started.admin_url}" in hints
    assert any(
        "CLOUDFLARE_EMAIL=emulator@example.com" in h and "CLOUDFLARE_API_KEY=emulator-key" in h
        for h in hints
    )
    assert "emulator-key" not in started.block
    assert "emulator@example.com" not in started.block


@pytest.mark.asyncio
async def test_the_block_is_sourceable_and_the_cli_rotates_every_tunnel(tmp_path: Path) -> None:
    started = await _start("--port", "0", "--tunnels", "25", "--rate-limit", "off")
    account = started.printed["CLOUDFLARE_ACCOUNT_ID"]
    journal = tmp_path / "rotation.jsonl"
    (tmp_path / "block.sh").write_text(started.block)
    magicwan = f"{shlex.quote(sys.executable)} -m magicwan"
    script = f". ./block.sh && {magicwan} psk rotate --all --journal {shlex.quote(str(journal))}"
    try:
        child = await asyncio.create_subprocess_exec(
            "sh",
            "-c",
            script,
            cwd=tmp_path,
            env=_clean_env(),  # nothing but the block names the emulator and its account
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(child.communicate(), timeout=120)
        async with aiohttp.ClientSession() as session:
            _, _, state = await call(session, "GET", f"{started.admin_url}/state")
    finally:
        returncode, _, stderr = await _stop(started.proc, signal.SIGTERM)
    assert child.returncode == 0, (out.decode(), err.decode())
    assert returncode == 0, stderr

    tunnels = state["accounts"][account]["tunnels"]
    assert len(tunnels) == 25
    journalled = {
        tunnel_id: record.psk
        for (journal_account, tunnel_id), record in read_journal(journal).items()
        if journal_account == account
    }
    current = {tunnel_id: tunnel["psk"] for tunnel_id, tunnel in tunnels.items()}
    assert all(current.values())
    assert journalled == current
    requests = state["requests"]
    assert requests["by_route"] == {"list_ipsec_tunnels": 1, "psk_generate": 25}
    assert requests["by_status"] == {"200": 26}


@pytest.mark.asyncio
async def test_cli_flags_reach_the_emulator() -> None:
    started = await _start(
        "--port",
        "0",
        "--tunnels",
        "1",
        "--gre-tunnels",
        "2",
        "--tunnel-id",
        "0" * 31 + "1",
        "--gre-tunnel-id",
        "023e105f4ecef8ad9ca31a8372d0c353",
        "--gre-tunnel-id",
        "0" * 31 + "2",
        "--seed",
        "9",
        "--account-id",
        "023e105f4ecef8ad9ca31a8372d0c353",
        "--api-token",
        "t0k",
        "--api-email",
        "me@example.com",
        "--api-key",
        "k3y",
        "--rate-limit",
        "off",
        "--max-psk-batch",
        "7",
        "--psk-min-length",
        "20",
        "--psk-max-length",
        "40",
        "--fault-html-502",
        "1",
    )
    printed = started.printed
    try:
        assert printed["CLOUDFLARE_ACCOUNT_ID"] == "023e105f4ecef8ad9ca31a8372d0c353"
        assert printed["CLOUDFLARE_API_TOKEN"] == "t0k"
        async with aiohttp.ClientSession() as session:
            url = f"{printed['CLOUDFLARE_BASE_URL']}/accounts/{printed['CLOUDFLARE_ACCOUNT_ID']}"
            headers = {"X-Auth-Email": "me@example.com", "X-Auth-Key": "k3y"}
            async with session.get(f"{url}/magic/ipsec_tunnels", headers=headers) as resp:
                assert resp.status == 502
                assert resp.content_type == "text/html"
                assert "Ratelimit" not in resp.headers
            _, _, state = await call(session, "GET", f"{started.admin_url}/state")
            assert state["seed"] == 9
            assert state["rate_limit"] is None
            assert state["max_psk_batch"] == 7
            assert state["psk_bounds"] == [20, 40]
            account = state["accounts"][printed["CLOUDFLARE_ACCOUNT_ID"]]
            assert len(account["tunnels"]) == 2
            assert list(account["tunnels"])[1] == "0" * 31 + "1"
            assert list(account["gre_tunnels"])[2:] == [
                "023e105f4ecef8ad9ca31a8372d0c353",
                "0" * 31 + "2",
            ]
    finally:
        returncode, _, stderr = await _stop(started.proc, signal.SIGTERM)
    assert returncode == 0, stderr


def test_shell_values_are_quoted() -> None:
    from magicwan.emulator import Emulator, EmulatorState
    from magicwan.emulator.__main__ import shell_block

    state = EmulatorState(api_token="it's $HOME")
    block = shell_block(Emulator(state, root_url="http://127.0.0.1:1"))
    assert block.splitlines()[1] == "export CLOUDFLARE_API_TOKEN='it'\"'\"'s $HOME'"
    assert shlex.split(block.splitlines()[1])[1] == "CLOUDFLARE_API_TOKEN=it's $HOME"


@pytest.mark.parametrize(
    ("text", "expected"), [("1200/300", (1200, 300.0)), ("10/0.5", (10, 0.5)), ("off", None)]
)
def test_rate_limit_flag(text: str, expected: tuple[int, float] | None) -> None:
    assert build_parser().parse_args(["--rate-limit", text]).rate_limit == expected


@pytest.mark.parametrize("bad", ["1200", "a/b", "0/10", "5/0", "0", "none", "-5/10"])
def test_rate_limit_flag_refuses_what_the_shared_parser_refuses(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([f"--rate-limit={bad}"])
    assert "expected REQUESTS/SECONDS" in capsys.readouterr().err


def test_fault_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["--fault-server-error", "0.1", "--fault-reset-after-store", "0.2", "--latency", "0.05"]
    )
    assert faults_from_args(args) == Faults(
        server_error=0.1, reset_after_store=0.2, latency=0.05, latency_probability=1.0
    )
    args = parser.parse_args(["--latency", "0.05", "--latency-probability", "0.5"])
    assert faults_from_args(args) == Faults(latency=0.05, latency_probability=0.5)
    assert faults_from_args(parser.parse_args([])) == Faults.none()
    assert parser.parse_args([]).rate_limit == (1200, 300.0)
    assert parser.parse_args([]).port == 8787
    assert parser.parse_args([]).host == "127.0.0.1"
    assert parser.parse_args([]).tunnels == 10
    assert parser.parse_args([]).gre_tunnels == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["--fault-html-502", "2"])
    args = parser.parse_args(["--fault-late-store", "0.5", "--late-store-delay", "0.25"])
    assert faults_from_args(args) == Faults(late_store=0.5, late_store_delay=0.25)


@pytest.mark.parametrize("kind", list(FaultKind))
def test_every_fault_kind_has_a_flag(kind: FaultKind) -> None:
    flag = "--fault-" + kind.value.replace("_", "-")
    args = build_parser().parse_args([flag, "0.25"])
    assert faults_from_args(args) == Faults(**{kind.value: 0.25})


@pytest.mark.parametrize(
    "argv",
    [
        ["--tunnels", "-1"],
        ["--gre-tunnels", "x"],
        ["--max-psk-batch", "0"],
        ["--psk-min-length", "0"],
    ],
)
def test_bad_counts_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["--account-id", "nope"],
        ["--psk-min-length", "50", "--psk-max-length", "40"],
        ["--fault-html-502", "0.7", "--fault-late-store", "0.7"],
    ],
)
def test_inconsistent_flags_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from magicwan.emulator.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_port_in_use_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from magicwan.emulator.__main__ import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err


def test_every_flag_says_what_it_does_in_help() -> None:
    parser = build_parser()
    silent = [
        action.option_strings[0]
        for action in parser._actions  # argparse keeps no public list of its options
        if action.option_strings and not action.help
    ]
    assert silent == []


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_the_emulator_refuses_a_port_out_of_range_with_a_usage_error(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # `python -m magicwan.emulator --port 70000` ended in a traceback
    # (OverflowError: bind(): port must be 0-65535) instead of a usage error.
    with pytest.raises(SystemExit) as ended:
        build_parser().parse_args(["--port", port])
    assert ended.value.code == 2
    assert "--port" in capsys.readouterr().err
