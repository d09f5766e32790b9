"""magicwan.delivery.Command against real programs (``sh -c`` scripts)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from magicwan import IPsecTunnel, MagicWAN, new_psk
from magicwan.delivery import (
    CHECK_VARIABLE,
    ENVIRONMENT,
    EX_CONFIG,
    Checkable,
    Command,
    Delivery,
    DeliveryError,
    DeliveryTarget,
)
from magicwan.emulator import run
from tests.support.leaks import shown_in

PSK = "O3bwKSjnaoCxDoUxjcq4Rk8ZKkezQUiy"
TUNNEL = IPsecTunnel(
    id="c4a7362d577a6c3019a474fd6f485823",
    name="branch-1",
    cloudflare_endpoint="162.159.0.1",
    customer_endpoint="203.0.113.7",
    ipsec_id="c4a7362d577a6c3019a474fd6f485823.023e105f4ecef8ad9ca31a8372d0c353.ipsec.cloudflare.com",
)
ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
DELIVERY = Delivery(account_id=ACCOUNT, tunnel_id=TUNNEL.id, psk=PSK, tunnel=TUNNEL)


def sh(script: str, *args: str, timeout: float = 30.0) -> Command:
    return Command(["sh", "-c", script, "sh", *args], timeout=timeout)


def gone(pid: int) -> bool:
    """The process no longer runs (it may linger as a zombie until someone reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def wait_gone(*pids: int) -> bool:
    for _ in range(200):
        if all(gone(pid) for pid in pids):
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.fixture
def stray_pids() -> Iterator[list[int]]:
    """Pids a test started in the background: killed at the end whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.asyncio
async def test_the_psk_arrives_on_stdin_and_nowhere_else(tmp_path: Path) -> None:
    out = tmp_path / "received"
    script = r"""
        psk=$(cat)
        printf '%s' "$psk" > "$1"
        # The PSK must not be in our own argv or environment, nor in our parent's.
        for f in /proc/$$/cmdline /proc/$$/environ /proc/$PPID/environ; do
            if tr '\0' '\n' < "$f" | grep -qF -- "$psk"; then echo "found in $f" >&2; exit 3; fi
        done
    """
    await sh(script, str(out))(DELIVERY)
    assert out.read_text() == PSK
    environment = sh("true").environment(DELIVERY)
    assert not any(PSK in value for value in environment.values())


@pytest.mark.asyncio
async def test_stdin_is_the_psk_a_newline_and_end_of_file(tmp_path: Path) -> None:
    out = tmp_path / "stdin"
    await sh('cat > "$1"', str(out))(DELIVERY)
    assert out.read_bytes() == PSK.encode() + b"\n"


@pytest.mark.asyncio
async def test_the_tunnels_facts_are_in_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "env"
    await sh('env > "$1"', str(out))(DELIVERY)
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert {name: env[name] for name in ENVIRONMENT} == {
        "MAGICWAN_TUNNEL_ID": TUNNEL.id,
        "MAGICWAN_TUNNEL_NAME": "branch-1",
        "MAGICWAN_ACCOUNT_ID": ACCOUNT,
        "MAGICWAN_IPSEC_ID": TUNNEL.ipsec_id,
        "MAGICWAN_CUSTOMER_ENDPOINT": "203.0.113.7",
        "MAGICWAN_CLOUDFLARE_ENDPOINT": "162.159.0.1",
    }
    assert env["PATH"] == os.environ["PATH"]  # the caller's environment is kept


@pytest.mark.asyncio
async def test_unknown_facts_are_empty_even_when_inherited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAGICWAN_TUNNEL_NAME", "stale-from-the-caller")
    out = tmp_path / "env"
    await sh('env > "$1"', str(out))(Delivery(account_id=ACCOUNT, tunnel_id="t1", psk=PSK))
    lines = out.read_text().splitlines()
    assert "MAGICWAN_TUNNEL_NAME=" in lines
    assert "MAGICWAN_CLOUDFLARE_ENDPOINT=" in lines
    assert "MAGICWAN_TUNNEL_ID=t1" in lines


@pytest.mark.asyncio
async def test_env_replaces_the_callers_environment(tmp_path: Path) -> None:
    out = tmp_path / "env"
    command = Command(["/bin/sh", "-c", 'env > "$1"', "sh", str(out)], env={"ONLY": "this"})
    await command(DELIVERY)
    names = {line.split("=", 1)[0] for line in out.read_text().splitlines()}
    assert {"ONLY", "MAGICWAN_TUNNEL_ID"} <= names
    assert "HOME" not in names


@pytest.mark.asyncio
async def test_a_failing_program_shows_its_stderr_scrubbed() -> None:
    script = r"""
        psk=$(cat)
        echo "first line" >&2
        printf 'cannot install key %s: \033[31mdenied\033[0m\n' "$psk" >&2
        exit 7
    """
    with pytest.raises(DeliveryError) as caught:
        await sh(script)(DELIVERY)
    error = caught.value
    assert error.reason == "exit_status"
    assert error.tunnel_id == TUNNEL.id
    assert "exited with status 7" in str(error)
    assert "cannot install key [REDACTED]: \\x1b[31mdenied\\x1b[0m\\n" in str(error)
    assert "first line\\n" in str(error)
    assert "\x1b" not in str(error)
    assert "\n" not in str(error)
    assert shown_in(PSK, error) == []


@pytest.mark.asyncio
async def test_a_long_stderr_is_cut_to_its_end() -> None:
    script = r"""
        psk=$(cat)
        head -c 200000 /dev/zero | tr '\0' 'x' >&2
        echo " the end: $psk" >&2
        exit 1
    """
    with pytest.raises(DeliveryError) as caught:
        await sh(script)(DELIVERY)
    text = str(caught.value)
    assert text.endswith("xxx the end: [REDACTED]\\n")
    assert len(text) < 500
    assert shown_in(PSK, caught.value) == []


@pytest.mark.asyncio
async def test_a_program_killed_by_a_signal_fails() -> None:
    with pytest.raises(DeliveryError) as caught:
        await sh("kill -TERM $$")(DELIVERY)
    assert caught.value.reason == "exit_status"
    assert "killed by SIGTERM" in str(caught.value)


@pytest.mark.asyncio
async def test_a_program_that_cannot_start_fails(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError) as caught:
        await Command([str(tmp_path / "no-such-program")])(DELIVERY)
    assert caught.value.reason == "not_started"
    assert "no-such-program" in str(caught.value)
    assert "No such file or directory" in str(caught.value)
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(DeliveryError) as denied:
        await Command([str(script)])(DELIVERY)
    assert "Permission denied" in str(denied.value)


@pytest.mark.asyncio
async def test_a_timeout_kills_the_whole_process_group(
    tmp_path: Path, stray_pids: list[int]
) -> None:
    pids = tmp_path / "pids"
    script = r"""
        sleep 60 & echo $! >> "$1"
        echo $$ >> "$1"
        echo "waiting for the router" >&2
        wait
    """
    with pytest.raises(DeliveryError) as caught:
        await sh(script, str(pids), timeout=0.5)(DELIVERY)
    started = [int(pid) for pid in pids.read_text().split()]
    stray_pids.extend(started)
    assert len(started) == 2
    assert caught.value.reason == "timeout"
    assert "did not finish within 0.5s and was killed" in str(caught.value)
    assert "waiting for the router" in str(caught.value)
    assert await wait_gone(*started)


@pytest.mark.asyncio
async def test_cancelling_a_delivery_kills_the_program(
    tmp_path: Path, stray_pids: list[int]
) -> None:
    pids = tmp_path / "pids"
    script = r"""sleep 60 & echo $! >> "$1"; echo $$ >> "$1"; wait"""
    task = asyncio.ensure_future(sh(script, str(pids))(DELIVERY))
    for _ in range(500):
        if pids.exists() and len(pids.read_text().split()) == 2:
            break
        await asyncio.sleep(0.01)
    started = [int(pid) for pid in pids.read_text().split()]
    stray_pids.extend(started)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_gone(*started)


@pytest.mark.asyncio
async def test_a_child_left_holding_stderr_does_not_hold_the_delivery(
    tmp_path: Path, stray_pids: list[int]
) -> None:
    pids = tmp_path / "pids"
    await sh('sleep 60 & echo $! > "$1"', str(pids))(DELIVERY)
    stray_pids.append(int(pids.read_text()))
    assert not gone(stray_pids[0])  # a success: leftovers are the program's business


@pytest.mark.asyncio
async def test_a_program_that_ignores_its_input_succeeds() -> None:
    await sh("exit 0")(DELIVERY)


def test_argv_must_be_a_list_of_strings() -> None:
    with pytest.raises(TypeError):
        Command("install-psk --tunnel x")  # a str is a Sequence[str]: refused at run time
    with pytest.raises(TypeError):
        Command([])
    with pytest.raises(TypeError):
        Command(["prog", 1])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="timeout"):
        Command(["prog"], timeout=0)
    assert repr(Command(["prog", "-v"], timeout=5)) == "Command(['prog', '-v'], timeout=5)"


@pytest.mark.asyncio
async def test_a_psk_too_long_for_a_pipe_is_refused() -> None:
    huge = Delivery(account_id=ACCOUNT, tunnel_id="t1", psk="k" * 5000)
    with pytest.raises(DeliveryError) as caught:
        await sh("cat >/dev/null")(huge)
    assert caught.value.reason == "misconfigured"
    assert "k" * 20 not in str(caught.value)


def pids_in(path: Path) -> list[int]:
    return [int(pid) for pid in path.read_text().split()] if path.exists() else []


# -- permanent failures --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_program_that_does_not_exist_fails_permanently(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError) as caught:
        await Command([str(tmp_path / "no-such-program")])(DELIVERY)
    assert (caught.value.reason, caught.value.permanent) == ("not_started", True)
    assert "cannot start" in str(caught.value)
    with pytest.raises(DeliveryError) as unknown:
        await Command(["no-such-program-anywhere"], env={"PATH": str(tmp_path)})(DELIVERY)
    assert (unknown.value.reason, unknown.value.permanent) == ("not_started", True)


@pytest.mark.asyncio
async def test_a_failing_exit_status_may_be_retried_but_ex_config_may_not() -> None:
    with pytest.raises(DeliveryError) as retried:
        await sh("echo router busy >&2; exit 1")(DELIVERY)
    assert (retried.value.reason, retried.value.permanent) == ("exit_status", False)
    with pytest.raises(DeliveryError) as final:
        await sh(f"echo no such router >&2; exit {EX_CONFIG}")(DELIVERY)
    assert (final.value.reason, final.value.permanent) == ("exit_status", True)
    assert "exited with status 78 (EX_CONFIG" in str(final.value)
    assert "no such router" in str(final.value)


@pytest.mark.asyncio
async def test_a_program_that_cannot_start_leaves_no_descriptor_open(tmp_path: Path) -> None:
    before = len(os.listdir("/dev/fd"))
    for command in (
        Command(["true"], cwd=tmp_path / "gone"),  # chdir fails before anything runs
        Command([str(tmp_path / "no-such-program")]),
    ):
        with pytest.raises(DeliveryError) as caught:
            await command(DELIVERY)
        assert caught.value.reason == "not_started"
    assert len(os.listdir("/dev/fd")) == before


# -- the program dies with magicwan ----------------------------------------------------------

PARENT = """
import asyncio, sys
from magicwan.delivery import Command, Delivery

script = 'echo $$ >> "$1"; sleep 300 & echo $! >> "$1"; wait'
delivery = Delivery(account_id="a", tunnel_id="t1", psk="O3bwKSjnaoCxDoUxjcq4Rk8ZKkezQUiy")
asyncio.run(Command(["sh", "-c", script, "sh", sys.argv[1]], timeout=600)(delivery))
"""


def poll(condition: object, what: str) -> None:
    """Wait for ``condition()`` (bounded by a count of polls, not a measured time)."""
    import time

    assert callable(condition)
    for _ in range(1000):
        if condition():
            return
        time.sleep(0.01)
    pytest.fail(f"never happened: {what}")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to see a process")
def test_the_program_and_its_children_die_when_magicwan_is_killed(
    tmp_path: Path, stray_pids: list[int]
) -> None:
    pids = tmp_path / "pids"
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(PARENT), str(pids)])  # noqa: S603
    try:
        poll(lambda: len(pids_in(pids)) == 2 or parent.poll() is not None, "the program started")
        started = pids_in(pids)
        stray_pids.extend(started)
        assert len(started) == 2, f"the parent exited with {parent.returncode}"
        assert not any(gone(pid) for pid in started)
        parent.kill()  # SIGKILL: no handler, no finally, no atexit runs in the parent
        parent.wait()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    poll(lambda: all(gone(pid) for pid in started), "the program and its child died")


@pytest.mark.asyncio
async def test_a_parent_with_many_open_files_still_delivers() -> None:
    """The supervisor watches its pipe from magicwan by the pipe's number, which can be
    past select()'s FD_SETSIZE (1024) in a busy process."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"needs 1200 open files (RLIMIT_NOFILE is {soft})")
    held = [os.dup(0) for _ in range(1100)]
    try:
        await sh("cat >/dev/null")(DELIVERY)
        with pytest.raises(DeliveryError, match="status 3"):
            await sh("exit 3")(DELIVERY)
    finally:
        for fd in held:
            os.close(fd)


# -- check -------------------------------------------------------------------------------------

TARGET = DeliveryTarget(account_id=ACCOUNT, tunnel_id=TUNNEL.id, tunnel=TUNNEL)


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.asyncio
async def test_check_finds_the_program_without_running_it(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    program = executable(tmp_path / "push-psk", f"#!/bin/sh\ntouch {ran}\n")
    for command in (
        Command([str(program)]),
        Command(["push-psk"], env={"PATH": f"/nonexistent:{tmp_path}"}),
        Command(["./push-psk"], cwd=tmp_path),
    ):
        assert isinstance(command, Checkable)
        await command.check(TARGET)
        await command.check(DELIVERY)
    assert not ran.exists()


@pytest.mark.asyncio
async def test_check_of_a_missing_or_unrunnable_program_is_permanent(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\n")
    cases = {
        Command([str(tmp_path / "nope")]): "does not exist",
        Command([str(plain)]): "is not an executable file",
        Command([str(tmp_path)]): "is not an executable file",
        Command(["push-psk"], env={"PATH": str(tmp_path)}): "not an executable file in PATH",
    }
    for command, problem in cases.items():
        with pytest.raises(DeliveryError) as caught:
            await command.check(TARGET)
        assert (caught.value.reason, caught.value.permanent) == ("not_started", True)
        assert problem in str(caught.value)
        assert caught.value.tunnel_id == TUNNEL.id


@pytest.mark.asyncio
async def test_run_check_runs_the_program_with_magicwan_check_and_no_psk(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    script = r"""printf '%s|%s|' "$MAGICWAN_CHECK" "$MAGICWAN_TUNNEL_NAME" > "$1"; cat >> "$1" """
    command = Command(["sh", "-c", script, "sh", str(seen)], run_check=True)
    await command.check(TARGET)
    assert seen.read_text() == "1|branch-1|"  # and end of file at once on stdin


@pytest.mark.asyncio
async def test_run_check_fails_as_the_program_says(tmp_path: Path) -> None:
    command = Command(["sh", "-c", "echo router unreachable >&2; exit 3"], run_check=True)
    with pytest.raises(DeliveryError) as caught:
        await command.check(TARGET)
    assert (caught.value.reason, caught.value.permanent) == ("exit_status", False)
    assert "router unreachable" in str(caught.value)


@pytest.mark.asyncio
async def test_a_delivery_never_runs_as_a_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = tmp_path / "seen"
    monkeypatch.setenv(CHECK_VARIABLE, "1")
    script = r"""printf '%s' "${MAGICWAN_CHECK-unset}" > "$1" """
    await Command(["sh", "-c", script, "sh", str(seen)], run_check=True)(DELIVERY)
    assert seen.read_text() == "unset"
    await Command(["sh", "-c", script, "sh", str(seen)], env={CHECK_VARIABLE: "1"})(DELIVERY)
    assert seen.read_text() == "unset"


@pytest.mark.asyncio
async def test_a_delivery_program_never_inherits_exported_psks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `set -a; . <(magicwan journal export DIR --format env); set +a` (the README: "lines
    # to source"), then `magicwan psk rotate ... --deliver-exec push-psk` in that shell:
    # Command strips the Cloudflare credentials from the program's environment but not
    # magicwan's own PSK variables, so every router program gets every tunnel's PSK.
    # Expected: MAGICWAN_PSK_* never reach a program, like the credentials.
    seen = tmp_path / "environment"
    script = tmp_path / "push.sh"
    script.write_text(f"#!/bin/sh\nread psk\nenv > {seen}\n")
    script.chmod(0o700)
    async with run(tunnels=2, rate_limit=None) as emu:
        exported = new_psk()
        monkeypatch.setenv(f"MAGICWAN_PSK_{emu.tunnel_ids[1]}", exported)
        async with MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={}) as client:
            rotation = client.tunnels.ipsec.psk.rotate(
                emu.account_id,
                emu.tunnel_ids[:1],
                journal=tmp_path / "j.jsonl",
                deliver=Command([str(script)]),
            )
            async with rotation:
                (outcome,) = [outcome async for outcome in rotation]
    assert outcome.delivered, outcome.error
    environment = seen.read_text()
    assert exported not in environment
    assert "MAGICWAN_PSK_" not in environment
