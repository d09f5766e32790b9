"""The IKE lab's two charon daemons: :func:`ike_lab` starts them, :class:`IKELab` drives and
inspects them.

Both run in ONE private network namespace (loopback only: nothing they send can leave it),
each in a mount namespace of its own with a private directory over ``/run`` (two charons
refuse to share a pid file). Their VICI sockets live in a temporary directory on the file
system, which this process reaches from its own namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicwan.ikelab.config import (
    Side,
    TunnelEnds,
    child_ts,
    connection,
    edge_key,
    strongswan_conf,
)
from magicwan.ikelab.errors import IKELabError
from magicwan.ikelab.prerequisites import CHARON, import_vici, tool

if TYPE_CHECKING:
    from magicwan.models.tunnels import IPsecTunnel

__all__ = ["IKELab", "ike_lab"]

#: A blocking VICI initiate holds one of charon's 16 worker threads: the lab keeps its own
#: calls to a few at a time, so the daemons never starve.
_VICI_CALLS = 4
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 5.0

# Holds the private network namespace: brings loopback up, then waits for its standard
# input to close (our teardown, or this process dying).
_HOLDER = 'ip link set lo up && ip -batch "$1" && echo ready && exec cat >/dev/null'
# One daemon in its own mount namespace with a private /run. It stops charon when its
# standard input closes, so a process that dies leaves no daemon behind.
_DAEMON = (
    'mount --bind "$1" /run || exit 1; "$2" & charon=$!; '
    'cat >/dev/null; kill "$charon"; wait "$charon"'
)


def _text(value: Any) -> Any:
    """A VICI answer with bytes turned into text (the lab's own decoder: it judges
    ``magicwan.delivery``, so it shares no code with it)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {key: _text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_text(item) for item in value]
    return value


class _Daemon:
    def __init__(self, side: Side, process: subprocess.Popen[bytes], socket_path: Path) -> None:
        self.side = side
        self.process = process
        self.socket_path = socket_path

    def stop(self) -> None:
        _stop(self.process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Close its standard input (the cue to end), wait; kill its group if it lingers."""
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    try:
        process.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(_STOP_TIMEOUT)


class IKELab:
    """The running pair of daemons: their sockets and logs, and commands to drive and
    inspect them. Made by :func:`ike_lab`."""

    def __init__(self, directory: Path, tunnels: Sequence[TunnelEnds], *, child_sas: bool) -> None:
        #: The lab's private temporary directory (sockets, configuration, logs).
        self.directory = directory
        self.tunnels = tuple(tunnels)
        self.child_sas = child_sas
        #: The router's VICI socket: give it to ``magicwan.delivery.StrongSwan``.
        self.router_socket = str(directory / "router.vici")
        #: The edge's VICI socket (Cloudflare's side: :func:`bridge` loads PSKs there).
        self.edge_socket = str(directory / "edge.vici")
        self._daemons: dict[Side, _Daemon] = {}
        self._calls = asyncio.Semaphore(_VICI_CALLS)

    def __repr__(self) -> str:
        return f"<IKELab {self.directory} tunnels={len(self.tunnels)}>"

    # -- plumbing -------------------------------------------------------------------------

    def socket(self, side: Side) -> str:
        """The VICI socket path of ``side``."""
        return self.router_socket if side == "router" else self.edge_socket

    def pid(self, side: Side) -> int:
        """The pid of the process holding ``side``'s namespaces (charon's parent shell)."""
        return self._daemons[side].process.pid

    def log(self, side: Side) -> str:
        """The daemon's log so far (for failure messages)."""
        path = self.directory / f"{side}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def _vici(self, side: Side, work: Any) -> Any:
        """Run ``work(session)`` in a thread with a fresh VICI session to ``side``."""
        vici = import_vici()

        def run() -> Any:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(30)
                sock.connect(self.socket(side))
                return work(vici.Session(sock))

        async with self._calls:
            return await asyncio.to_thread(run)

    # -- commands -------------------------------------------------------------------------

    async def load_connections(self) -> None:
        """Load every tunnel's IKE connection into both daemons (no PSK on either side).
        :func:`ike_lab` does this at start; loading again replaces them."""
        for side in ("edge", "router"):

            def load(session: Any, side: Side = side) -> None:
                for index, tunnel in enumerate(self.tunnels):
                    session.load_conn(connection(tunnel, index, side, child_sas=self.child_sas))

            await self._vici(side, load)

    async def load_edge_psk(self, ipsec_id: str, psk: str) -> None:
        """Give the edge (Cloudflare's side) the PSK of the tunnel whose router is ``ipsec_id``."""
        await self.load_edge_psks({ipsec_id: psk})

    async def load_edge_psks(self, psks: Mapping[str, str]) -> None:
        """:meth:`load_edge_psk` for many tunnels in one VICI session."""

        def load(session: Any) -> None:
            for ipsec_id, psk in psks.items():
                session.load_shared(edge_key(ipsec_id, psk))

        await self._vici("edge", load)

    async def initiate(self, conn: str, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Bring ``conn`` up from the router (with its CHILD_SA, if the lab has them).

        Raises :class:`IKELabError` with charon's reason and its log lines (``log``).
        """
        message = {"ike": conn, "timeout": str(int(timeout * 1000))}
        if self.child_sas:
            message["child"] = "net"

        def initiate(session: Any) -> tuple[str, list[str]] | None:
            lines: list[str] = []
            try:
                for event in session.initiate(message):
                    lines.append(_text(event.get("msg", b"")))
            except Exception as exc:  # vici's CommandException
                return str(exc), lines
            return None

        failure = await self._vici("router", initiate)
        if failure is not None:
            reason, lines = failure
            raise IKELabError(
                f"initiating {conn!r} failed: {reason}: " + " | ".join(lines[-5:]), log=lines
            )

    async def ike_sas(self, conn: str, *, side: Side = "router") -> list[dict[str, Any]]:
        """The IKE SAs of ``conn`` on ``side``, as charon lists them (text values), oldest
        first."""

        def sas(session: Any) -> list[dict[str, Any]]:
            found = []
            for event in session.list_sas({"ike": conn}):
                for name, sa in _text(dict(event)).items():
                    if name == conn:
                        found.append(sa)
            return found

        result: list[dict[str, Any]] = await self._vici(side, sas)
        return sorted(result, key=lambda sa: int(sa["uniqueid"]))

    async def sa_state(self, conn: str, *, side: Side = "router") -> str | None:
        """The state of ``conn``'s newest IKE SA on ``side`` (``"ESTABLISHED"``...), or None."""
        sas = await self.ike_sas(conn, side=side)
        return sas[-1]["state"] if sas else None

    async def sa_states(self, *, side: Side = "router") -> dict[str, str | None]:
        """:meth:`sa_state` of every tunnel's connection at once: ``{conn: state or None}``."""

        def sas(session: Any) -> dict[str, str | None]:
            newest: dict[str, tuple[int, str]] = {}
            for event in session.list_sas():
                for name, sa in _text(dict(event)).items():
                    unique = int(sa["uniqueid"])
                    if name not in newest or unique > newest[name][0]:
                        newest[name] = (unique, sa["state"])
            return {t.conn: newest[t.conn][1] if t.conn in newest else None for t in self.tunnels}

        result: dict[str, str | None] = await self._vici(side, sas)
        return result

    async def child_states(self, conn: str, *, side: Side = "router") -> list[str]:
        """The states of the CHILD_SAs under ``conn``'s newest IKE SA on ``side``."""
        sas = await self.ike_sas(conn, side=side)
        children = sas[-1].get("child-sas", {}) if sas else {}
        return [child["state"] for child in children.values()]

    async def shared_ids(self, *, side: Side = "router") -> list[str]:
        """The ids of the shared keys loaded over VICI into ``side`` (``get-shared``)."""
        answer = await self._vici(side, lambda session: session.get_shared())
        return sorted(_text(list(answer.get("keys", []))))

    async def stop(self, side: Side) -> None:
        """Stop one daemon (its socket file stays behind, refusing connections)."""
        daemon = self._daemons.get(side)
        if daemon is not None:
            await asyncio.to_thread(daemon.stop)


async def _wait_ready(daemon: _Daemon, lab: IKELab) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        if daemon.process.poll() is not None:
            raise IKELabError(
                f"{daemon.side} charon exited at start-up:\n{lab.log(daemon.side)[-3000:]}"
            )
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(daemon.socket_path))
            except OSError:
                pass
            else:
                return
        if time.monotonic() > deadline:
            log = lab.log(daemon.side)[-3000:]
            raise IKELabError(f"{daemon.side} charon did not open its VICI socket:\n{log}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def ike_lab(
    tunnels: Iterable[IPsecTunnel | TunnelEnds],
    *,
    child_sas: bool = False,
    keep_logs: str | os.PathLike[str] | None = None,
) -> AsyncIterator[IKELab]:
    """Start the edge and router daemons with one IKE connection per tunnel; stop them after.

    ``tunnels``: as listed by ``client.tunnels.ipsec.list()`` (each needs a ``name``, an
    ``ipsec_id`` and a ``cloudflare_endpoint``; see :meth:`TunnelEnds.of`), or
    :class:`TunnelEnds`. No PSK is loaded on either side. ``child_sas``: give each
    connection a CHILD_SA between two per-tunnel /32s (kernel-libipsec). ``keep_logs``: a
    directory to copy the daemons' logs (``edge.log``, ``router.log``) into at the end.
    Everything else is removed and both daemons are stopped at exit, even when start-up or
    the body fails. Raises :class:`IKELabError` when the daemons cannot start (check
    :func:`ike_missing` first).
    """
    ends = [t if isinstance(t, TunnelEnds) else TunnelEnds.of(t) for t in tunnels]
    if len({t.conn for t in ends}) != len(ends):
        raise ValueError("connection names (tunnel names) must be unique")
    if len({t.ipsec_id for t in ends}) != len(ends):
        raise ValueError("router identities (ipsec_id) must be unique")
    import_vici()
    # Short, private: a unix socket path may not exceed 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="magicwan-ike-"))
    lab = IKELab(directory, ends, child_sas=child_sas)
    holder: subprocess.Popen[bytes] | None = None
    try:
        batch = directory / "netns.ip"
        addresses = (
            [ts.split("/")[0] for i in range(len(ends)) for ts in child_ts(i)] if child_sas else []
        )
        batch.write_text("".join(f"address add {a}/32 dev lo\n" for a in addresses))
        holder = _spawn(
            [tool("unshare"), "-n", "--", "sh", "-c", _HOLDER, "sh", str(batch)],
            directory / "holder.out",
            stdout=subprocess.PIPE,
        )
        assert holder.stdout is not None
        try:
            ready = await asyncio.wait_for(
                asyncio.to_thread(holder.stdout.readline), _START_TIMEOUT
            )
        except TimeoutError:
            ready = b""
        if ready.strip() != b"ready":
            raise IKELabError(
                f"network namespace set-up failed: {(directory / 'holder.out').read_text()}"
            )

        sides: tuple[Side, Side] = ("edge", "router")
        for side in sides:
            run = directory / side / "run"
            run.mkdir(parents=True)
            conf = directory / side / "strongswan.conf"
            conf.write_text(strongswan_conf(directory, side, child_sas=child_sas))
            process = _spawn(
                [
                    tool("nsenter"),
                    "-t",
                    str(holder.pid),
                    "-n",
                    "--",
                    "unshare",
                    "-m",
                    "--",
                    "sh",
                    "-c",
                    _DAEMON,
                    "sh",
                    str(run),
                    str(CHARON),
                ],
                directory / f"{side}.out",
                env={**os.environ, "STRONGSWAN_CONF": str(conf)},
            )
            lab._daemons[side] = _Daemon(side, process, directory / f"{side}.vici")
        for daemon in lab._daemons.values():
            await _wait_ready(daemon, lab)
        await lab.load_connections()
        yield lab
    finally:
        await asyncio.to_thread(_teardown, lab, holder, keep_logs)


def _spawn(
    argv: list[str],
    output: Path,
    *,
    stdout: int | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start one of the lab's processes in a session of its own, its output (or only its
    standard error, with ``stdout=PIPE``) into ``output``, its standard input a pipe whose
    closing tells it to end.

    Called from the event loop on purpose: it blocks for one fork and exec, and in a worker
    thread a cancellation could lose the handle of a process already started.
    """
    with open(output, "wb") as out:
        return subprocess.Popen(  # noqa: S603 - fixed scripts, paths of our own
            argv,
            env=env,
            stdin=subprocess.PIPE,
            stdout=out if stdout is None else stdout,
            stderr=out if stdout is not None else subprocess.STDOUT,
            start_new_session=True,
        )


def _teardown(
    lab: IKELab,
    holder: subprocess.Popen[bytes] | None,
    keep_logs: str | os.PathLike[str] | None,
) -> None:
    for daemon in lab._daemons.values():
        daemon.stop()
    if holder is not None:
        _stop(holder)
        if holder.stdout is not None:
            holder.stdout.close()
    if keep_logs is not None:
        kept = Path(keep_logs)
        kept.mkdir(parents=True, exist_ok=True)
        for log in lab.directory.glob("*.log"):
            shutil.copy(log, kept / log.name)
    shutil.rmtree(lab.directory, ignore_errors=True)
