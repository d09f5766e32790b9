"""Secrets: with every logger at DEBUG, no PSK, key or token shows up anywhere.

The scenarios (successes, every error family, retries over injected faults, a journalled
rotation, the CLI) run against the emulator; afterwards every PSK the emulator ever generated is
collected from its history and looked for in every log record, repr, str and exception chain.
The journal is checked for its mode from the moment it exists.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import stat
from pathlib import Path

import pytest

from magicwan import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    InternalServerError,
    JournalError,
    MagicWAN,
    MagicWANError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnexpectedResponseError,
    read_journal,
)
from magicwan.emulator import Emulator, Faults
from magicwan.emulator.faults import FaultKind
from magicwan.journal import Journal, JournalEvent
from tests.support.clock import FakeClock
from tests.support.secrets import (
    SECRET_EMAIL,
    SECRET_KEY,
    SECRET_TOKEN,
    assert_no_secret,
    exception_texts,
    log_texts,
)

pytestmark = pytest.mark.asyncio

#: Every outcome fault the emulator can inject, from its own enum.
FAULT_KINDS = [kind.value for kind in FaultKind]


@pytest.fixture
def debug_everything(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in (
        "magicwan",
        "aiohttp",
        "aiohttp.client",
        "aiohttp.internal",
        "aiohttp.server",
        "aiohttp.web",
        "aiohttp.access",
        "asyncio",
    ):
        caplog.set_level(logging.DEBUG, logger=name)
        logging.getLogger(name).propagate = True
    return caplog


def _all_psks(emu: Emulator) -> list[str]:
    return [
        record.psk
        for account in emu.state.accounts.values()
        for tunnel in account.tunnels.values()
        for record in tunnel.history
    ]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


class Seen:
    """Everything the scenarios produced that a user could print."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.texts: list[str] = []

    def error(self, exc: BaseException) -> None:
        self.errors.append(exc)

    def show(self, *objects: object) -> None:
        self.texts += [repr(o) for o in objects] + [str(o) for o in objects]


async def _scenarios(emu: Emulator, tmp_path: Path, seen: Seen) -> None:
    account, tunnels = emu.account_id, emu.tunnel_ids
    fake = FakeClock()
    base = {"base_url": emu.base_url, "clock": fake.clock, "sleep": fake.sleep}

    # Successes, both auth schemes; reads.
    for creds in ({"api_token": SECRET_TOKEN}, {"api_email": SECRET_EMAIL, "api_key": SECRET_KEY}):
        async with MagicWAN(**creds, **base) as client:  # type: ignore[arg-type]
            seen.show(client)
            result = await client.tunnels.ipsec.psk.generate(account, tunnels[0])
            assert result.psk
            check = await client.tunnels.ipsec.psk.generate(account, tunnels[0], validate_only=True)
            seen.show(result, check, result.psk_metadata)
            seen.show(await client.tunnels.ipsec.get(account, tunnels[0]))
            seen.show(await client.tunnels.ipsec.list(account))

    # Error families from the emulator.
    async def expect(
        error: type[MagicWANError] | tuple[type[MagicWANError], ...],
        client: MagicWAN,
        tunnel: str = tunnels[1],
    ) -> None:
        with pytest.raises(error) as info:
            await client.tunnels.ipsec.psk.generate(account, tunnel)
        seen.error(info.value)

    async with MagicWAN(api_token=SECRET_TOKEN, max_retries=1, **base) as client:  # type: ignore[arg-type]
        await expect(NotFoundError, client, "f" * 32)
    async with MagicWAN(api_token=SECRET_TOKEN + "x", **base) as client:  # type: ignore[arg-type]
        await expect((AuthenticationError, PermissionDeniedError), client)
    async with MagicWAN(api_email=SECRET_EMAIL, api_key=SECRET_KEY + "x", **base) as client:  # type: ignore[arg-type]
        await expect((AuthenticationError, PermissionDeniedError), client)
    emu.set_rate_limit((1, 600.0))
    async with MagicWAN(api_token=SECRET_TOKEN, max_retry_after=1.0, **base) as client:  # type: ignore[arg-type]
        await client.tunnels.ipsec.psk.generate(account, tunnels[1])
        await expect(RateLimitError, client)
        await expect(RateLimitError, client)  # the client-side cooldown
    emu.set_rate_limit(None)

    # Every fault, alone, with too few retries to get through: the error is what's left
    # (a fault kind missing here fails the test with a KeyError).
    expected: dict[str, type[MagicWANError]] = {
        "server_error": InternalServerError,
        "rate_limited": RateLimitError,
        "reset_before_store": APIConnectionError,
        "reset_after_store": APIConnectionError,
        "html_502": UnexpectedResponseError,
        "truncated_json": UnexpectedResponseError,
        "late_store": APITimeoutError,  # stored after the client gave up waiting
    }
    for kind in FAULT_KINDS:
        emu.set_faults(Faults(**{kind: 1.0}, late_store_delay=0.3), seed=1)
        timeout = 0.1 if kind == "late_store" else 60.0
        async with MagicWAN(
            api_token=SECRET_TOKEN,
            max_retries=2,
            timeout=timeout,
            **base,  # type: ignore[arg-type]
        ) as client:
            await expect(expected[kind], client)

    # Retries through a mix of faults, to success.
    emu.set_faults(Faults(**dict.fromkeys(FAULT_KINDS, 0.08), late_store_delay=0.2), seed=2)
    async with MagicWAN(api_token=SECRET_TOKEN, max_retries=10, **base) as client:  # type: ignore[arg-type]
        for tunnel in tunnels:
            seen.show(await client.tunnels.ipsec.psk.generate(account, tunnel))

        # A journalled rotation through the same faults.
        journal = tmp_path / "rotation.jsonl"
        outcomes = [
            o async for o in client.tunnels.ipsec.psk.rotate(account, tunnels, journal=journal)
        ]
        seen.show(*outcomes)
        for outcome in outcomes:
            if outcome.error is not None:
                seen.error(outcome.error)
        assert _mode(journal) == 0o600
        seen.show(*read_journal(journal).values())
    emu.set_faults(Faults())

    # A rotation that cannot get through at all: failed outcomes carry errors.
    emu.set_faults(Faults(reset_after_store=1.0), seed=3)
    async with MagicWAN(api_token=SECRET_TOKEN, max_retries=1, **base) as client:  # type: ignore[arg-type]
        outcomes = [o async for o in client.tunnels.ipsec.psk.rotate(account, tunnels[:2])]
    assert not any(o.ok for o in outcomes)
    seen.show(*outcomes)
    for outcome in outcomes:
        assert outcome.error is not None
        seen.error(outcome.error)
    emu.set_faults(Faults())


async def _cli(emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seen: Seen) -> None:
    if importlib.util.find_spec("magicwan.cli") is None:
        return
    from magicwan.cli import amain

    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", SECRET_TOKEN)
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", emu.base_url)
    journal = tmp_path / "cli.jsonl"
    account, tunnels = emu.account_id, emu.tunnel_ids
    at = ["--journal", str(journal), "-vv"]
    lines = [*at, "--progress", "lines"]
    settle = ["--settle-window", "0"]  # read uncertain tunnels back at once
    commands: list[tuple[list[str], set[int]]] = [
        (["psk", "generate", account, tunnels[0], *at], {0}),
        (["psk", "rotate", account, *tunnels, *lines, "--resume", "--json", *settle], {0, 1}),
        (["psk", "generate", account, "f" * 32, *at], {1}),
        (["psk", "generate", account, "bad/id", *at], {2}),
        (["journal", "show", str(journal), "--json"], {0}),
    ]
    emu.set_faults(Faults(server_error=0.2, reset_after_store=0.2), seed=5)
    for argv, statuses in commands:
        out, err = io.StringIO(), io.StringIO()
        status = await amain(argv, stdout=out, stderr=err)
        assert status in statuses, (argv, status, err.getvalue()[-500:])
        seen.texts += [out.getvalue(), err.getvalue()]
    emu.set_faults(Faults())
    assert _mode(journal) == 0o600


async def test_no_secret_anywhere(
    emulator: Emulator,
    tmp_path: Path,
    debug_everything: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = Seen()
    await _scenarios(emulator, tmp_path, seen)
    await _cli(emulator, tmp_path, monkeypatch, seen)

    secrets = [SECRET_TOKEN, SECRET_KEY, *_all_psks(emulator)]
    assert len(secrets) > 20  # the scenarios did generate PSKs
    records = debug_everything.records
    assert any(r.name == "magicwan" and r.levelno == logging.DEBUG for r in records)
    assert_no_secret(log_texts(records), secrets, where="a log record")
    assert_no_secret(seen.texts, secrets, where="a repr or str")
    assert len(seen.errors) >= 10
    for exc in seen.errors:
        assert isinstance(exc, MagicWANError)
        assert_no_secret(exception_texts(exc), secrets, where=f"{type(exc).__name__} chain")


# -- the journal file -------------------------------------------------------------------------


async def test_rotation_journal_is_0600_at_its_first_append(
    emulator: Emulator, tmp_path: Path, permissive_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rotation.jsonl"
    modes: list[int] = []
    original = Journal.append

    def spying_append(self: Journal, event: JournalEvent) -> int:
        modes.append(_mode(self.path))
        seq = original(self, event)
        modes.append(_mode(self.path))
        return seq

    monkeypatch.setattr(Journal, "append", spying_append)
    async with MagicWAN(api_token=SECRET_TOKEN, base_url=emulator.base_url) as client:
        outcomes = [
            o
            async for o in client.tunnels.ipsec.psk.rotate(
                emulator.account_id, emulator.tunnel_ids, journal=path
            )
        ]
    assert all(o.ok for o in outcomes)
    assert modes
    assert set(modes) == {0o600}


@pytest.mark.parametrize("mode", [0o644, 0o666, 0o640, 0o604])
async def test_an_existing_loose_journal_is_tightened(
    emulator: Emulator, tmp_path: Path, permissive_umask: None, mode: int
) -> None:
    path = tmp_path / "loose.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, mode)
    os.close(fd)
    assert _mode(path) == mode
    async with MagicWAN(api_token=SECRET_TOKEN, base_url=emulator.base_url) as client:
        iterator = client.tunnels.ipsec.psk.rotate(
            emulator.account_id, emulator.tunnel_ids[:1], journal=path
        )
        first = await iterator.__anext__()
        assert _mode(path) == 0o600  # tightened before any PSK was written
        assert first.ok
        async for _ in iterator:
            pass
    assert _mode(path) == 0o600


async def test_a_symlinked_journal_is_refused(emulator: Emulator, tmp_path: Path) -> None:
    target = tmp_path / "target.txt"
    target.write_text("not a journal\n")
    target.chmod(0o644)
    link = tmp_path / "journal.jsonl"
    link.symlink_to(target)
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "nowhere.jsonl")

    for path in (link, dangling):
        with pytest.raises(JournalError):
            Journal(path).open()
        async with MagicWAN(api_token=SECRET_TOKEN, base_url=emulator.base_url) as client:
            with pytest.raises(JournalError):
                async for _ in client.tunnels.ipsec.psk.rotate(
                    emulator.account_id, emulator.tunnel_ids, journal=path
                ):
                    pass
    assert emulator.state.requests.total == 0  # refused before any PSK was generated
    assert target.read_text() == "not a journal\n"
    assert _mode(target) == 0o644
    assert not (tmp_path / "nowhere.jsonl").exists()
