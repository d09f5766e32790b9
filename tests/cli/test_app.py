"""The command line as a process (``magicwan.cli.app``): every exit status from a real
``python -m magicwan``, SIGTERM and SIGINT handled like Ctrl-C, the progress bar on a real
terminal (a pty), and ``journal export`` refusing one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import resource
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import attrs
import pytest
import pytest_asyncio
from aiohttp import web

from magicwan.cli.status import ExitStatus
from magicwan.emulator import Emulator, Faults
from magicwan.journal import Journal
from tests.support.cli import (
    Answers,
    cli_emulator,
    journalled,
    json_lines,
    magicwan,
    process_env,
    summary,
)

TUNNELS = 6


@pytest_asyncio.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Emulator, Answers]]:
    async with cli_emulator(monkeypatch, tunnels=TUNNELS) as pair:
        yield pair


@attrs.frozen
class Done:
    code: int
    out: str
    err: str


async def run_magicwan(
    emu: Emulator,
    *argv: str,
    env: dict[str, str] | None = None,
    preexec: Callable[[], None] | None = None,
) -> Done:
    """``python -m magicwan ARGV...`` as a child process, against ``emu``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "magicwan",
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or process_env(emu),
        preexec_fn=preexec,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode())


def _fsize_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


#: Interrupted (130) is the signal tests' below.
STATUSES = [status for status in ExitStatus if status is not ExitStatus.INTERRUPTED]


@pytest.mark.asyncio
@pytest.mark.parametrize("status", STATUSES, ids=lambda s: s.name)
async def test_every_exit_status_from_a_real_process(
    env: tuple[Emulator, Answers], tmp_path: Path, status: ExitStatus
) -> None:
    emu, answers = env
    journal = tmp_path / "j.jsonl"
    rotate = ("psk", "rotate", "--all", "--journal", str(journal))
    if status is ExitStatus.OK:
        done = await run_magicwan(emu, *rotate)
        assert "summary: 6 tunnels" in done.err
    elif status is ExitStatus.FAILED:
        answers.add("psk_generate", status=500, code=10001, message="x", tunnel=emu.tunnel_ids[0])
        done = await run_magicwan(emu, *rotate, "--max-retries", "0")
        assert "1 tunnel (failed): InternalServerError" in done.err
    elif status is ExitStatus.USAGE:
        done = await run_magicwan(emu, *rotate, "--conc", "4")
        assert "did you mean --concurrency?" in done.err
        assert emu.state.requests.total == 0
    elif status is ExitStatus.ACCESS:
        done = await run_magicwan(emu, *rotate, env=process_env(emu, CLOUDFLARE_API_TOKEN="no"))
        assert "cannot list the IPsec tunnels" in done.err
    elif status is ExitStatus.UNRECORDED:
        # A real write failure: the file may grow past its header and an intent line only,
        # so the line holding the new PSK cannot be written (EFBIG).
        holder = Journal(journal)
        holder.open()
        await holder.aclose()
        limit = journal.stat().st_size + 260
        done = await run_magicwan(
            emu,
            "psk",
            "generate",
            emu.tunnel_ids[0],
            "--journal",
            str(journal),
            preexec=_fsize_limit(limit),
        )
        assert "File too large" in done.err
        assert f"tunnel {emu.tunnel_ids[0]} holds a NEW PSK" in done.err
        assert emu.state.current_psk(emu.account_id, emu.tunnel_ids[0]) is not None
    else:
        assert status is ExitStatus.UNDELIVERED
        done = await run_magicwan(emu, *rotate, "--deliver-exec", "false", "--deliver-retries", "0")
        assert "'false' exited with status 1" in done.err
    assert done.code == status, done.err
    assert "Traceback" not in done.err


@pytest.mark.asyncio
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
async def test_a_signal_stops_the_run_with_a_summary_and_a_resume_hint(
    env: tuple[Emulator, Answers], tmp_path: Path, signum: signal.Signals
) -> None:
    emu, _ = env
    emu.set_faults(Faults(latency=0.2, latency_probability=1.0))
    journal = tmp_path / "j.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "magicwan",
        "psk",
        "rotate",
        "--all",
        "--journal",
        str(journal),
        "--concurrency",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=process_env(emu),
        # As a terminal's Ctrl-C finds it: the runner may have started us with SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stderr is not None
    seen = b""
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), 20)
        assert line, "the rotation ended before a tunnel was rotated"
        seen += line
        if line.startswith(b"ok "):
            break
    proc.send_signal(signum)
    _, rest = await asyncio.wait_for(proc.communicate(), 20)
    err = (seen + rest).decode()

    assert proc.returncode == 130, err
    assert "Traceback" not in err
    rows = summary(err)
    rotated = int(rows["rotated"])
    assert rotated >= 1
    assert int(rows["not attempted"]) >= 1
    assert "interrupted: no new tunnel was started; requests in flight finished" in err
    [hint] = [line for line in err.splitlines() if line.startswith("to finish: ")]
    command = shlex.split(hint.removeprefix("to finish: "))
    assert command[0] == "magicwan"
    assert command[-3:] == ["--journal", str(journal), "--resume"]

    emu.set_faults(Faults())
    resumed = await magicwan(*command[1:])
    assert resumed.code == 0, resumed.err
    assert summary(resumed.err)["skipped (already in the journal)"] == str(rotated)
    current = {t: emu.state.current_psk(emu.account_id, t) for t in emu.tunnel_ids}
    assert journalled(journal, emu.account_id) == current


@pytest.mark.asyncio
async def test_a_second_signal_stops_waiting_for_requests_in_flight(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, answers = env
    gate = asyncio.Event()  # PSK requests hang until the test is over

    async def hang(request: web.Request) -> None:
        if request.path.endswith("/psk_generate"):
            await gate.wait()

    answers.hooks.append(hang)
    journal = tmp_path / "j.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "magicwan",
        "psk",
        "rotate",
        "--all",
        "--journal",
        str(journal),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=process_env(emu),
    )
    try:
        while not journal.exists() or '"intent"' not in journal.read_text():
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGTERM)  # the drain would wait the client's 60 s timeout
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        gate.set()

    assert proc.returncode == 130, err.decode()
    assert b"stopped waiting for requests in flight" in err
    # What the first SIGTERM said is what the second did.
    assert b"A second interrupt (Ctrl-C or SIGTERM) stops waiting" in err
    # Every request was in flight: each tunnel may or may not hold a new PSK, so each is a
    # failure to rerun (not "not attempted"), and being cut short halts nothing.
    text = err.decode()
    assert summary(text)["failed"] == str(TUNNELS), text
    assert summary(text)["not attempted"] == "0", text
    assert "request was in flight" in text
    assert "--resume" in text
    assert "halting" not in text


async def _on_a_pty(emu: Emulator, *argv: str, stream: str) -> tuple[int, bytes, bytes]:
    """Run ``python -m magicwan`` with its ``stream`` ("stdout" or "stderr") on a pty;
    return the status, what the pty showed, and the other stream."""
    primary, secondary = pty.openpty()
    pipes: dict[str, int] = {"stdout": asyncio.subprocess.PIPE, "stderr": asyncio.subprocess.PIPE}
    pipes[stream] = secondary
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "magicwan",
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        env=process_env(emu, COLUMNS="120", TERM="xterm"),
        **pipes,  # type: ignore[arg-type]
    )
    os.close(secondary)

    def drain() -> bytes:
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child closed the terminal
                return shown
            if not chunk:
                return shown
            shown += chunk

    try:
        reader = asyncio.to_thread(drain)
        other = proc.stderr if stream == "stdout" else proc.stdout
        assert other is not None
        shown, rest = await asyncio.wait_for(asyncio.gather(reader, other.read()), 60)
        await proc.wait()
    finally:
        with contextlib.suppress(OSError):
            os.close(primary)
    assert proc.returncode is not None
    return proc.returncode, shown, rest


@pytest.mark.asyncio
async def test_a_terminal_gets_a_redrawn_bar_and_stdout_stays_clean_json(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    code, shown, out = await _on_a_pty(
        emu, "psk", "rotate", "--all", "--journal", str(tmp_path / "j"), "--json", stream="stderr"
    )
    text = shown.decode()
    assert code == 0, text
    assert "\r\x1b[Krotating" in text
    assert f"{TUNNELS}/{TUNNELS}  [####################]  100%  ok {TUNNELS}  failed 0" in text
    assert "\nok " not in text  # a bar, not lines
    assert "summary: 6 tunnels" in text
    lines = json_lines(out.decode())
    assert [line["event"] for line in lines] == ["tunnel"] * TUNNELS + ["summary"]


@pytest.mark.asyncio
async def test_journal_export_refuses_a_terminal_unless_forced(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    journal = tmp_path / "j.jsonl"
    assert (await magicwan("psk", "rotate", "--all", "--journal", str(journal))).code == 0
    psk = emu.state.current_psk(emu.account_id, emu.tunnel_ids[0])
    assert psk is not None

    code, shown, err = await _on_a_pty(emu, "journal", "export", str(journal), stream="stdout")
    assert code == 2
    assert psk.encode() not in shown
    assert b"refusing to write PSKs to a terminal" in err

    code, shown, err = await _on_a_pty(
        emu, "journal", "export", str(journal), "--force", stream="stdout"
    )
    assert code == 0, err
    assert psk.encode() in shown
