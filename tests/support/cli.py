"""Running the ``magicwan`` command line in tests: in-process against the emulator, or as a
real process; and an emulator middleware that answers chosen requests the way a test needs
(an error envelope with hostile text, a long 429).

    async with cli_emulator(monkeypatch, tunnels=6) as (emu, answers):
        answers.add("psk_generate", status=404, code=1002, message="gone")
        result = await magicwan("psk", "rotate", "--all", "--journal", str(path))
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiohttp import web

from magicwan import cli
from magicwan.emulator import Emulator, EmulatorState, run
from magicwan.journal import read_journal

__all__ = [
    "REPO",
    "TUNNELS",
    "Answers",
    "Result",
    "assert_no_psk",
    "break_journal_after",
    "cli_emulator",
    "edge_psk",
    "emulator_behind",
    "journal_events",
    "journalled",
    "json_lines",
    "magicwan",
    "magicwan_process",
    "process_env",
    "summary",
]

REPO = Path(__file__).resolve().parents[2]
#: Tunnels of the emulator behind the ``env`` fixture of ``tests/cli/psk/``.
TUNNELS = 6


@attrs.frozen
class Result:
    code: int
    out: str
    err: str


async def magicwan(*argv: str, stdin: str | None = None) -> Result:
    """``magicwan ARGV...`` in this event loop; stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    code = await cli.amain(
        list(argv),
        stdout=out,
        stderr=err,
        stdin=io.StringIO(stdin) if stdin is not None else io.StringIO(""),
    )
    return Result(code, out.getvalue(), err.getvalue())


@attrs.define
class _Rule:
    route: str
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    tunnel: str | None
    times: int | None


class Answers:
    """An emulator middleware: requests that match a rule get the rule's answer instead
    of the emulator's. A route is matched by the last segment of the path
    (``psk_generate``, ``psk``, ``ipsec_tunnels``, ``gre_tunnels``) and the method."""

    def __init__(self) -> None:
        self.rules: list[_Rule] = []
        self.answered = 0
        #: Called with every request before it is answered (to look at the world then).
        self.hooks: list[Callable[[web.Request], Awaitable[None]]] = []

        @web.middleware
        async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
            return await self._answer(request, handler)

        #: Give this to ``run(middlewares=[...])``.
        self.middleware = middleware

    def add(
        self,
        route: str,
        *,
        status: int,
        code: int = 1000,
        message: str = "error",
        headers: Mapping[str, str] | None = None,
        tunnel: str | None = None,
        times: int | None = None,
    ) -> None:
        """Answer ``route`` (of ``tunnel`` only, if given) with a failure envelope,
        ``times`` times (always when None)."""
        body = {
            "success": False,
            "errors": [{"code": code, "message": message}],
            "messages": [],
            "result": None,
        }
        self.rules.append(_Rule(route, status, body, dict(headers or {}), tunnel, times))

    def clear(self) -> None:
        self.rules.clear()

    async def _answer(self, request: web.Request, handler: Any) -> web.StreamResponse:
        for hook in self.hooks:
            await hook(request)
        parts = request.path.rstrip("/").split("/")
        for rule in self.rules:
            if parts[-1] != rule.route or (rule.tunnel is not None and rule.tunnel not in parts):
                continue
            if rule.times is not None:
                if rule.times <= 0:
                    continue
                rule.times -= 1
            self.answered += 1
            return web.json_response(rule.body, status=rule.status, headers=rule.headers)
        response: web.StreamResponse = await handler(request)
        return response


@asynccontextmanager
async def cli_emulator(
    monkeypatch: pytest.MonkeyPatch, **options: Any
) -> AsyncIterator[tuple[Emulator, Answers]]:
    """An emulator (no rate limit unless given) whose credentials, URL and account are in
    the environment, with an :class:`Answers` middleware in front."""
    answers = Answers()
    options.setdefault("rate_limit", None)
    async with run(middlewares=[answers.middleware], **options) as emulator:
        for name, value in emulator.env().items():
            monkeypatch.setenv(name, value)
        yield emulator, answers


def process_env(emulator: Emulator, **extra: str) -> dict[str, str]:
    """The environment of a ``python -m magicwan`` child against ``emulator``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CLOUDFLARE_", "MAGICWAN_"))  # never reach real Cloudflare
    }
    env.update(emulator.env())
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("NO_COLOR", None)
    env.update(extra)
    return env


async def magicwan_process(emulator: Emulator, *argv: str, timeout: float = 30.0) -> Result:
    """``python -m magicwan ARGV...`` as a real process against ``emulator``; no stdin."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "magicwan",
        *argv,
        cwd=REPO,
        env=process_env(emulator),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def journalled(path: Path, account_id: str) -> dict[str, str]:
    """tunnel id -> newest PSK the journal records (for ``account_id``)."""
    return {
        tunnel_id: record.psk
        for (account, tunnel_id), record in read_journal(path).items()
        if account == account_id.lower() and record.psk
    }


def json_lines(out: str) -> list[dict[str, Any]]:
    """Every line of ``out``, each a JSON object."""
    return [json.loads(line) for line in out.splitlines()]


def summary(err: str) -> dict[str, str]:
    """The rows of the human summary on stderr: name -> value."""
    rows: dict[str, str] = {}
    lines = err.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("summary: ")) + 1
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        name, _, value = line.strip().rpartition("  ")
        rows[name.strip()] = value.strip()
    return rows


def assert_no_psk(text: str, emulator: Emulator) -> None:
    """No PSK the emulator ever held, and not its token, is in ``text``."""
    for tunnel_id in emulator.tunnel_ids:
        for record in emulator.state.history(emulator.account_id, tunnel_id):
            assert record.psk not in text, f"a PSK of tunnel {tunnel_id} was printed"
    assert emulator.api_token not in text


def edge_psk(emu: Emulator, tunnel_id: str) -> str | None:
    """The PSK the emulator's edge holds for ``tunnel_id`` now."""
    return emu.state.current_psk(emu.account_id, tunnel_id)


def journal_events(path: Path) -> list[dict[str, object]]:
    """The journal's lines after its header, as dicts."""
    return [json.loads(line) for line in path.read_text().splitlines()][1:]


def break_journal_after(monkeypatch: pytest.MonkeyPatch, path: Path, rotated: int) -> None:
    """Every fsync of ``path`` fails (ENOSPC) once it holds more than ``rotated`` rotated lines."""
    real = os.fsync

    def fsync(fd: int) -> None:
        ours = path.exists() and os.fstat(fd).st_ino == path.stat().st_ino
        if ours and path.read_bytes().count(b'"event":"rotated"') > rotated:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr("magicwan.journal.os.fsync", fsync)


@asynccontextmanager
async def emulator_behind(
    monkeypatch: pytest.MonkeyPatch, *middlewares: Any
) -> AsyncIterator[Emulator]:
    """An emulator of 3 tunnels behind ``middlewares``; its variables set for the command line."""
    state = EmulatorState(tunnels=3, seed=11, rate_limit=None)
    async with run(state=state, middlewares=list(middlewares), shutdown_timeout=2.0) as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        yield emu
