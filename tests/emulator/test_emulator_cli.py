"""``python -m magicwan.emulator`` as a real subprocess, and its argument parsing."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import aiohttp
import pytest
from support.emulator import SUCCESS, call

from magicwan.emulator import Faults
from magicwan.emulator.__main__ import _faults, build_parser, parse_rate_limit

EXPECTED_KEYS = [
    "MAGICWAN_BASE_URL",
    "MAGICWAN_ACCOUNT_ID",
    "CLOUDFLARE_API_TOKEN",
    "CLOUDFLARE_EMAIL",
    "CLOUDFLARE_API_KEY",
    "MAGICWAN_EMULATOR_ADMIN_URL",
]


async def _start(*args: str) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "magicwan.emulator",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    printed: dict[str, str] = {}
    try:
        while len(printed) < len(EXPECTED_KEYS):
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=15)
            assert line, "the emulator exited before printing its address"
            key, _, value = line.decode().strip().partition("=")
            printed[key] = value
    except BaseException:
        proc.kill()
        await proc.communicate()
        raise
    return proc, printed


async def _stop(proc: asyncio.subprocess.Process, signum: int) -> tuple[int, str]:
    proc.send_signal(signum)
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=15)
    assert proc.returncode is not None
    return proc.returncode, stderr.decode()


@pytest.mark.asyncio
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_cli_prints_its_address_serves_and_exits_cleanly(signum: int) -> None:
    proc, printed = await _start("--port", "0", "--tunnels", "3")
    assert list(printed) == EXPECTED_KEYS
    base_url = printed["MAGICWAN_BASE_URL"]
    assert base_url.startswith("http://127.0.0.1:")
    assert base_url.endswith("/client/v4")
    assert not base_url.startswith("http://127.0.0.1:0/")
    assert printed["CLOUDFLARE_API_TOKEN"] == "emulator-token"
    assert printed["CLOUDFLARE_EMAIL"] == "emulator@example.com"
    assert printed["CLOUDFLARE_API_KEY"] == "emulator-key"
    account = printed["MAGICWAN_ACCOUNT_ID"]
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
            _, _, state = await call(
                session, "GET", f"{printed['MAGICWAN_EMULATOR_ADMIN_URL']}/state"
            )
            assert state["accounts"][account]["tunnels"][tunnel]["psk"] == body["result"]["psk"]
    finally:
        returncode, stderr = await _stop(proc, signum)
    assert returncode == 0, stderr
    assert "Traceback" not in stderr


@pytest.mark.asyncio
async def test_cli_flags_reach_the_emulator() -> None:
    proc, printed = await _start(
        "--port",
        "0",
        "--tunnels",
        "1",
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
        "--fault-html-502",
        "1",
    )
    try:
        assert printed["MAGICWAN_ACCOUNT_ID"] == "023e105f4ecef8ad9ca31a8372d0c353"
        assert printed["CLOUDFLARE_API_TOKEN"] == "t0k"
        async with aiohttp.ClientSession() as session:
            url = f"{printed['MAGICWAN_BASE_URL']}/accounts/{printed['MAGICWAN_ACCOUNT_ID']}"
            headers = {"X-Auth-Email": "me@example.com", "X-Auth-Key": "k3y"}
            async with session.get(f"{url}/magic/ipsec_tunnels", headers=headers) as resp:
                assert resp.status == 502
                assert resp.content_type == "text/html"
                assert "Ratelimit" not in resp.headers
            _, _, state = await call(
                session, "GET", f"{printed['MAGICWAN_EMULATOR_ADMIN_URL']}/state"
            )
            assert state["seed"] == 9
            assert state["rate_limit"] is None
    finally:
        returncode, stderr = await _stop(proc, signal.SIGTERM)
    assert returncode == 0, stderr


def test_parse_rate_limit() -> None:
    assert parse_rate_limit("1200/300") == (1200, 300.0)
    assert parse_rate_limit("10/0.5") == (10, 0.5)
    assert parse_rate_limit("off") is None
    for bad in ("1200", "a/b", "0/10", "5/0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_rate_limit(bad)


def test_fault_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["--fault-server-error", "0.1", "--fault-reset-after-store", "0.2", "--latency", "0.05"]
    )
    assert _faults(args) == Faults(
        server_error=0.1, reset_after_store=0.2, latency=0.05, latency_probability=1.0
    )
    args = parser.parse_args(["--latency", "0.05", "--latency-probability", "0.5"])
    assert _faults(args) == Faults(latency=0.05, latency_probability=0.5)
    assert _faults(parser.parse_args([])) == Faults.none()
    assert parser.parse_args([]).rate_limit == (1200, 300.0)
    assert parser.parse_args([]).port == 8787
    assert parser.parse_args([]).host == "127.0.0.1"
    with pytest.raises(SystemExit):
        parser.parse_args(["--fault-html-502", "2"])
