"""A rotation refuses a journal it cannot own safely, before it sends anything.

- Two rotations on one journal would corrupt it (three processes could leave tunnels whose
  journalled PSK was not the edge's, all exiting 0). The journal is locked for a run: a second
  rotation on it is refused on enter with a ``JournalError`` and sends nothing, in the same
  process or in another one.
- A journal the rotation cannot use (owned by another user, a directory, a FIFO,
  a symbolic link, a file that is not a journal) is refused on enter with a ``JournalError``,
  nothing is sent and the file is left as it was.

The emulator is real and served over loopback; the other processes are real processes
(``tests/integration/_journal_child.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from magicwan import JournalError, MagicWAN, read_journal
from magicwan.emulator import Emulator, EmulatorState, Faults, run
from tests.support.children import start_rotation_child
from tests.support.cli import cli_emulator, journalled, magicwan
from tests.support.loopback import make_client

pytestmark = pytest.mark.asyncio

CHILD = "tests.integration._journal_child"
HEADER = b'{"event":"journal","version":2}\n'

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ByToken:
    """Counts the API requests the emulator serves, by the bearer token that sent them."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.tunnels: Counter[str] = Counter()

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path.startswith("/client/v4/"):
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            self.requests[token] += 1
            if request.path.endswith("/psk_generate"):
                self.tunnels[request.path.split("/")[-2]] += 1
        return await handler(request)


@contextlib.asynccontextmanager
async def _serve(state: EmulatorState) -> AsyncIterator[tuple[Emulator, ByToken]]:
    log = ByToken()
    async with run(state=state, middlewares=[log.middleware], shutdown_timeout=1.0) as emu:
        yield emu, log


@pytest_asyncio.fixture
async def emu() -> AsyncIterator[tuple[Emulator, ByToken]]:
    async with _serve(EmulatorState(tunnels=12, seed=91, rate_limit=None)) as served:
        yield served


def _journalled_psks(journal: Path) -> dict[str, str | None]:
    return {tunnel: record.psk for (_, tunnel), record in read_journal(journal).items()}


def _edge_psks(emu: Emulator, tunnels: list[str]) -> dict[str, str | None]:
    return {t: emu.state.current_psk(emu.account_id, t) for t in tunnels}


# --- a second rotation on a journal in use --------------------------------------------------


async def test_a_second_rotation_on_the_same_journal_is_refused_on_enter(
    emu: tuple[Emulator, ByToken], tmp_path: Path
) -> None:
    server, log = emu
    first, second = server.tunnel_ids[:6], server.tunnel_ids[6:]
    journal = tmp_path / "rotation.jsonl"
    async with make_client(server) as client:
        psk = client.tunnels.ipsec.psk
        running = psk.rotate(server.account_id, first, concurrency=2, journal=journal)
        async with running:
            other = psk.rotate(server.account_id, second, concurrency=2, journal=journal)
            with pytest.raises(JournalError, match="in use by another rotation"):
                async with other:
                    pytest.fail("the second rotation was let in")
            outcomes = [o async for o in running]
        assert all(o.ok for o in outcomes)
        # Nothing of the second rotation reached the emulator; the first one did its work.
        assert sorted(log.tunnels) == sorted(first)
        assert set(_journalled_psks(journal)) == set(first)
        assert _journalled_psks(journal) == _edge_psks(server, first)

        # The lock lives as long as the run: once it is over, the journal is free again.
        again = psk.rotate(server.account_id, second, concurrency=2, journal=journal)
        async with again:
            assert all([o.ok async for o in again])
    assert _journalled_psks(journal) == _edge_psks(server, server.tunnel_ids)


def _start_child(
    emu: Emulator, token: str, journal: Path, ids_file: Path, out: Path, **extra: str
) -> subprocess.Popen[bytes]:
    with out.open("wb") as fh:
        return start_rotation_child(
            emu, journal, ids_file, stdout=fh, token=token, module=CHILD, env=extra
        )


async def _finish(
    child: subprocess.Popen[bytes], out: Path, timeout: float = 60.0
) -> dict[str, object]:
    """Wait for the child without blocking the loop (the emulator serves it); its report."""
    for _ in range(int(timeout / 0.01)):
        if child.poll() is not None:
            break
        await asyncio.sleep(0.01)
    else:
        child.kill()
        child.wait()
        raise AssertionError(f"the child did not finish in time: {out.read_text()[-2000:]}")
    text = out.read_text()
    try:
        report: dict[str, object] = json.loads(text.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise AssertionError(f"the child printed no report: {text[-3000:]}") from None
    report["exit"] = child.returncode
    return report


async def test_three_processes_on_one_journal_one_rotates_and_the_others_send_nothing(
    tmp_path: Path,
) -> None:
    tokens = [f"journal-child-{n}" for n in range(3)]
    # Latency keeps the rotation that got the journal busy while the others try theirs.
    faults = Faults(latency=0.05, latency_probability=1.0)
    state = EmulatorState(tunnels=60, seed=92, rate_limit=None, faults=faults)
    for token in tokens:
        state.add_token(state.user.id, token)
    journal = tmp_path / "rotation.jsonl"
    ids_file = tmp_path / "ids.txt"
    go = tmp_path / "go"
    async with _serve(state) as (emu, log):
        ids_file.write_text("\n".join(emu.tunnel_ids) + "\n")
        outs = [tmp_path / f"child{n}.out" for n in range(3)]
        children = [
            _start_child(emu, token, journal, ids_file, out, MAGICWAN_TEST_GO=str(go))
            for token, out in zip(tokens, outs, strict=True)
        ]
        try:
            async with asyncio.timeout(60):
                while not all(out.read_bytes().startswith(b"ready") for out in outs):
                    assert all(c.poll() is None for c in children), [o.read_text() for o in outs]
                    await asyncio.sleep(0.01)
            go.touch()  # all three start their rotations now
            reports = [await _finish(child, out) for child, out in zip(children, outs, strict=True)]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        edge = _edge_psks(emu, emu.tunnel_ids)

    by_result = Counter(str(r["result"]) for r in reports)
    assert by_result == {"rotated": 1, "journal_error": 2}, reports
    for token, report in zip(tokens, reports, strict=True):
        if report["result"] == "rotated":
            assert report["exit"] == 0
            assert report["ok"] == len(emu.tunnel_ids)
            assert log.requests[token] == len(emu.tunnel_ids)
        else:
            # Refused on enter, at once: nothing sent, a clear message, a documented status.
            assert report["exit"] == 3
            assert report["stage"] == "enter"
            assert "in use by another rotation" in str(report["error"])
            assert log.requests[token] == 0
    # The journal is whole: every tunnel rotated once, and each journalled PSK is the edge's.
    assert sum(log.tunnels.values()) == len(emu.tunnel_ids)
    assert _journalled_psks(journal) == edge
    assert all(edge.values())


# --- journals a rotation cannot use --------------------------------------------------------


def _snapshot(path: Path) -> tuple[bytes, int] | None:
    if path.is_symlink() or not path.is_file():
        return None
    return path.read_bytes(), stat.S_IMODE(path.stat().st_mode)


def _make(kind: str, tmp_path: Path, tunnel_ids: list[str]) -> tuple[Path, Path]:
    """A journal path of the given kind, and the file whose bytes and mode must not change."""
    path = tmp_path / "rotation.jsonl"
    watched = path
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink_to_a_journal":
        watched = tmp_path / "real.jsonl"
        watched.write_bytes(HEADER)
        watched.chmod(0o600)
        path.symlink_to(watched)
    elif kind == "dangling_symlink":
        watched = tmp_path / "nowhere.jsonl"
        path.symlink_to(watched)
    elif kind == "tunnel_id_list":  # the ids file given as the journal by mistake
        path.write_text("\n".join(tunnel_ids) + "\n")
        path.chmod(0o644)
    elif kind == "json_lines_not_events":
        path.write_bytes(b"".join(json.dumps({"id": t}).encode() + b"\n" for t in tunnel_ids))
        path.chmod(0o640)
    else:  # pragma: no cover - a typo in the parameters
        raise AssertionError(kind)
    return path, watched


@pytest.mark.parametrize(
    "kind",
    [
        "directory",
        "fifo",
        "symlink_to_a_journal",
        "dangling_symlink",
        "tunnel_id_list",
        "json_lines_not_events",
    ],
)
async def test_a_journal_that_cannot_be_used_is_refused_on_enter(
    emu: tuple[Emulator, ByToken], tmp_path: Path, kind: str
) -> None:
    server, _ = emu
    path, watched = _make(kind, tmp_path, server.tunnel_ids)
    before = _snapshot(watched)
    async with make_client(server) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            server.account_id, server.tunnel_ids, journal=path
        )
        with pytest.raises(JournalError) as info:
            async with rotation:
                pytest.fail("a rotation started on an unusable journal")
    assert str(path) in str(info.value)
    assert server.state.requests.total == 0  # refused before anything was sent
    assert _snapshot(watched) == before  # neither appended to nor chmod-ed
    if kind == "dangling_symlink":
        assert not watched.exists()  # the link was not followed to create its target


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's tmp_path is root's alone when run as root)."""
    path = Path(tempfile.mkdtemp(prefix="magicwan-journal-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


async def test_a_journal_of_another_user_is_refused_on_enter(
    emu: tuple[Emulator, ByToken], shared_dir: Path
) -> None:
    server, log = emu
    journal = shared_dir / "rotation.jsonl"
    journal.write_bytes(HEADER)
    journal.chmod(0o600)
    before = _snapshot(journal)
    if os.geteuid() == 0:
        # Root reads any file: the rotation runs in a child that drops to nobody first.
        ids_file = shared_dir / "ids.txt"
        ids_file.write_text("\n".join(server.tunnel_ids) + "\n")
        out = shared_dir / "child.out"
        child = _start_child(
            server, server.api_token, journal, ids_file, out, MAGICWAN_TEST_USER="nobody"
        )
        report = await _finish(child, out)
        assert report["result"] == "journal_error", report
        assert report["stage"] == "enter"
        assert report["exit"] == 3
        message = str(report["error"])
    else:
        journal.chmod(0o000)
        async with MagicWAN(
            api_token=server.api_token, base_url=server.base_url, rate_limit=None
        ) as client:
            rotation = client.tunnels.ipsec.psk.rotate(
                server.account_id, server.tunnel_ids, journal=journal
            )
            with pytest.raises(JournalError) as info:
                async with rotation:
                    pytest.fail("a rotation started on a journal it may not open")
        journal.chmod(0o600)
        message = str(info.value)
    assert "Permission denied" in message
    assert str(journal) in message
    assert sum(log.requests.values()) == 0
    assert _snapshot(journal) == before


#: Another user (``nobody`` on most systems).
OTHER_UID = 65534


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
async def test_a_journal_file_owned_by_another_user_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `magicwan psk rotate --all --journal shared/rotation.jsonl` where another user made
    # (or owns) that file first, empty. Mode 0600 would not help: the file is still
    # theirs (they read it, or chmod it back, whenever they like). The command line
    # refuses it (exit 2) before anything is sent, as rotate(journal=...) does above.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    path = shared / "rotation.jsonl"
    path.touch(mode=0o644)
    os.chown(path, OTHER_UID, OTHER_UID)
    async with cli_emulator(monkeypatch, tunnels=3) as (emu, _):
        result = await magicwan("psk", "rotate", "--all", "--journal", str(path), "-q")
        held = journalled(path, emu.account_id)
    assert os.stat(path).st_uid == OTHER_UID
    assert not held, (
        f"exit {result.code}: {len(held)} new PSK(s) were written into a journal file that "
        f"belongs to uid {OTHER_UID}, who can read it"
    )
    assert result.code == 2
