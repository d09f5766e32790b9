"""An IKE lab: two real strongSwan charon daemons, and a bridge from the emulator to one of them.

A test and demo tool, like the rest of :mod:`magicwan.emulator`: it shows PSK rotation and
delivery end to end on one machine. Never point it at anything real.

One daemon, the *edge*, stands in for Cloudflare: through :func:`bridge` it holds, for every
tunnel, the PSK the emulator holds. The other, the *router*, is the customer's device, which
should get its PSKs only through :class:`magicwan.delivery.StrongSwan` (on
:attr:`IKELab.router_socket`). Both run in ONE private network namespace (loopback only:
nothing they send can leave it), each in a mount namespace of its own with a private
directory over ``/run`` (two charons refuse to share a pid file). Their VICI sockets live in
a temporary directory on the file system, which this process reaches from its own namespace::

    async with run(tunnels=24, gre_tunnels=0, rate_limit=None) as emu, MagicWAN(...) as client:
        tunnels = await client.tunnels.ipsec.list(emu.account_id)
        async with ike_lab(tunnels) as lab:
            with bridge(emu.state, lab):  # every PSK the emulator stores reaches the edge
                deliver = StrongSwan(lab.router_socket, reauth=True)
                ...  # rotate with deliver=deliver
                assert await lab.sa_states() == {t.name: "ESTABLISHED" for t in tunnels}

Every tunnel is one IKE connection on each side, named after the tunnel (its ``name``): the
router's local identity is the tunnel's ``ipsec_id`` (an FQDN) and its remote identity the
edge's, the tunnel's ``cloudflare_endpoint`` (an IPv4 address); the edge mirrors that. One
edge identity may serve every tunnel: the edge tells tunnels apart by the router's identity.
PSK authentication, ``mobike = no`` (IKE_AUTH would float to port 4500 and miss the peer's
NAT-T port), MODP-2048.

Needs Linux, root, ``unshare``/``nsenter`` (util-linux), ``ip`` (iproute2), charon
(``strongswan-charon``) and the ``vici`` package (``pip install 'magicwan[strongswan]'``);
with ``child_sas=True`` also the ``kernel-libipsec`` plugin (``libcharon-extra-plugins``),
since the kernel may lack ESP. :func:`ike_missing` says what is missing, if anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Literal, Self

import attrs

from magicwan.emulator.models import PSKRecord, Tunnel
from magicwan.emulator.state import EmulatorState
from magicwan.models.tunnels import IPsecTunnel

__all__ = [
    "CHARON",
    "LIBIPSEC",
    "PORTS",
    "Bridge",
    "IKELab",
    "IKELabError",
    "Side",
    "TunnelEnds",
    "bridge",
    "ike_lab",
    "ike_missing",
]

CHARON = Path("/usr/lib/ipsec/charon")
LIBIPSEC = Path("/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so")
#: IKE and NAT-T ports of each daemon (a private network namespace: they cannot collide).
PORTS = {"edge": (10500, 14500), "router": (10501, 14501)}
_PLUGINS = "random nonce aes sha1 sha2 hmac kdf gmp socket-default kernel-netlink vici"
_IKE_PROPOSAL = "aes256-sha256-modp2048"
_ESP_PROPOSAL = "aes256-sha256"
#: A blocking VICI initiate holds one of charon's 16 worker threads: the lab keeps its own
#: calls to a few at a time, so the daemons never starve.
_VICI_CALLS = 4
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 5.0
#: How long the bridge waits for the edge to take one PSK before giving up on it.
_BRIDGE_TIMEOUT = 10.0
_INSTALL_VICI = "the vici package (pip install 'magicwan[strongswan]')"

Side = Literal["edge", "router"]


class IKELabError(Exception):
    """The daemons could not be started, or a lab command failed.

    ``log`` holds the lines charon streamed during the command (``initiate``), which say
    why it failed (``received AUTHENTICATION_FAILED notify error``...).
    """

    def __init__(self, message: str, *, log: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.log: tuple[str, ...] = tuple(log)


# -- prerequisites ---------------------------------------------------------------------


def _tool(name: str) -> str:
    return shutil.which(name) or name


@functools.cache
def _namespaces_usable() -> str | None:
    try:
        subprocess.run(  # noqa: S603 - a fixed command line
            [_tool("unshare"), "-n", "-m", "--", "true"],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot create network and mount namespaces (unshare -n -m: {exc})"
    return None


def ike_missing(*, child_sas: bool = False) -> str | None:
    """Why the lab cannot run here (``"needs root ..."``), or None when it can.

    The reason is a phrase that completes "this machine ..." and names the package to
    install.
    """
    if not sys.platform.startswith("linux"):
        return "needs Linux (network and mount namespaces)"
    if os.geteuid() != 0:
        return "needs root (network and mount namespaces)"
    for tool, package in (("unshare", "util-linux"), ("nsenter", "util-linux"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install {package})"
    if not os.access(CHARON, os.X_OK):
        return f"needs charon at {CHARON} (apt-get install strongswan-charon)"
    if importlib.util.find_spec("vici") is None:
        return f"needs {_INSTALL_VICI}"
    if child_sas and not LIBIPSEC.exists():
        return f"needs {LIBIPSEC.name} (apt-get install libcharon-extra-plugins)"
    if child_sas and not Path("/dev/net/tun").exists():
        return "needs /dev/net/tun (kernel-libipsec)"
    return _namespaces_usable()


def _import_vici() -> ModuleType:
    try:
        import vici  # type: ignore[import-untyped]
    except ImportError:
        raise IKELabError(f"the IKE lab needs {_INSTALL_VICI}") from None
    return vici  # type: ignore[no-any-return]


# -- tunnels ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TunnelEnds:
    """One tunnel as both daemons see it."""

    conn: str  #: the IKE connection's name on both daemons
    ipsec_id: str  #: the router's identity (the edge's remote identity)
    edge_id: str  #: the edge's identity (the router's remote identity)

    @classmethod
    def of(cls, tunnel: IPsecTunnel) -> TunnelEnds:
        """The ends of a tunnel as Cloudflare (or the emulator) lists it: connection
        ``name``, router ``ipsec_id``, edge ``cloudflare_endpoint``."""
        if not (tunnel.name and tunnel.ipsec_id and tunnel.cloudflare_endpoint):
            raise ValueError(
                f"tunnel {tunnel.id} needs a name, an ipsec_id and a cloudflare_endpoint"
            )
        return cls(conn=tunnel.name, ipsec_id=tunnel.ipsec_id, edge_id=tunnel.cloudflare_endpoint)


def _child_ts(index: int) -> tuple[str, str]:
    """Per-tunnel /32 traffic selectors (router, edge): both must be local addresses, since
    kernel-libipsec installs a route with a source address inside the local selector."""
    router = ipaddress.IPv4Address("10.0.0.1") + index
    edge = ipaddress.IPv4Address("10.128.0.1") + index
    return f"{router}/32", f"{edge}/32"


# -- the daemons -----------------------------------------------------------------------

# Holds the private network namespace: brings loopback up, then waits for its standard
# input to close (our teardown, or this process dying).
_HOLDER = 'ip link set lo up && ip -batch "$1" && echo ready && exec cat >/dev/null'
# One daemon in its own mount namespace with a private /run. It stops charon when its
# standard input closes, so a process that dies leaves no daemon behind.
_DAEMON = (
    'mount --bind "$1" /run || exit 1; "$2" & charon=$!; '
    'cat >/dev/null; kill "$charon"; wait "$charon"'
)


def _strongswan_conf(directory: Path, side: Side, *, child_sas: bool) -> str:
    port, natt = PORTS[side]
    plugins = (
        _PLUGINS.replace("kernel-netlink", "kernel-libipsec kernel-netlink")
        if child_sas
        else _PLUGINS
    )
    return f"""\
charon {{
  load_modular = no
  load = {plugins}
  port = {port}
  port_nat_t = {natt}
  install_routes = no
  install_virtual_ip = no
  retransmit_tries = 2
  retransmit_timeout = 1.0
  # Many tunnels from one address at once: no cookies, no blocking of half-open SAs.
  block_threshold = 100000
  cookie_threshold = 100000
  cookie_threshold_ip = 100000
  plugins {{
    vici {{
      socket = unix://{directory / f"{side}.vici"}
    }}
    bypass-lan {{
      load = no
    }}
  }}
  filelog {{
    {side} {{
      path = {directory / f"{side}.log"}
      time_format = %H:%M:%S
      flush_line = yes
      default = 1
      cfg = 2
    }}
  }}
}}
"""


def _connection(tunnel: TunnelEnds, index: int, side: Side, *, child_sas: bool) -> dict[str, Any]:
    other: Side = "router" if side == "edge" else "edge"
    local_id, remote_id = (
        (tunnel.ipsec_id, tunnel.edge_id) if side == "router" else (tunnel.edge_id, tunnel.ipsec_id)
    )
    conn: dict[str, Any] = {
        "version": "2",
        "local_addrs": ["127.0.0.1"],
        "remote_addrs": ["127.0.0.1"],
        "local_port": str(PORTS[side][0]),
        "remote_port": str(PORTS[other][0]),
        "mobike": "no",
        "proposals": [_IKE_PROPOSAL],
        "local": {"auth": "psk", "id": local_id},
        "remote": {"auth": "psk", "id": remote_id},
    }
    if child_sas:
        router_ts, edge_ts = _child_ts(index)
        local_ts, remote_ts = (router_ts, edge_ts) if side == "router" else (edge_ts, router_ts)
        conn["children"] = {
            "net": {
                "local_ts": [local_ts],
                "remote_ts": [remote_ts],
                "esp_proposals": [_ESP_PROPOSAL],
            }
        }
    return {tunnel.conn: conn}


def _edge_key(ipsec_id: str, psk: str) -> dict[str, Any]:
    """The edge's shared key for the router ``ipsec_id`` (re-loading replaces it)."""
    return {"id": f"edge-{ipsec_id}", "type": "IKE", "data": psk, "owners": [ipsec_id]}


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
        vici = _import_vici()

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
                    session.load_conn(_connection(tunnel, index, side, child_sas=self.child_sas))

            await self._vici(side, load)

    async def load_edge_psk(self, ipsec_id: str, psk: str) -> None:
        """Give the edge (Cloudflare's side) the PSK of the tunnel whose router is ``ipsec_id``."""
        await self.load_edge_psks({ipsec_id: psk})

    async def load_edge_psks(self, psks: Mapping[str, str]) -> None:
        """:meth:`load_edge_psk` for many tunnels in one VICI session."""

        def load(session: Any) -> None:
            for ipsec_id, psk in psks.items():
                session.load_shared(_edge_key(ipsec_id, psk))

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
    _import_vici()
    # Short, private: a unix socket path may not exceed 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="magicwan-ike-"))
    lab = IKELab(directory, ends, child_sas=child_sas)
    holder: subprocess.Popen[bytes] | None = None
    try:
        batch = directory / "netns.ip"
        addresses = (
            [ts.split("/")[0] for i in range(len(ends)) for ts in _child_ts(i)] if child_sas else []
        )
        batch.write_text("".join(f"address add {a}/32 dev lo\n" for a in addresses))
        holder = _spawn(
            [_tool("unshare"), "-n", "--", "sh", "-c", _HOLDER, "sh", str(batch)],
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
            conf.write_text(_strongswan_conf(directory, side, child_sas=child_sas))
            process = _spawn(
                [
                    _tool("nsenter"),
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


# -- the bridge: the emulator's PSKs on the edge ----------------------------------------------


class Bridge:
    """A PSK listener of an :class:`~magicwan.emulator.EmulatorState` that loads every new PSK
    of the lab's tunnels into the edge, synchronously: the edge holds a PSK before the
    answer that carries it leaves the emulator, so a router re-authenticating with it never
    races the edge. Made by :func:`bridge`; :meth:`close` (or leaving ``with``) unregisters it.

    A PSK the edge could not take is logged by the emulator (the request goes on) and
    described, without the PSK, in :attr:`failures`. ``loaded`` counts the PSKs loaded and
    ``seconds`` the time spent loading them (the cost the emulator's answers pay).
    """

    def __init__(self, state: EmulatorState, lab: IKELab) -> None:
        self.state = state
        self.socket_path = lab.edge_socket
        self._identities = frozenset(t.ipsec_id for t in lab.tunnels)
        self._vici = _import_vici()
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._session: Any = None
        self._closed = False
        #: PSKs loaded into the edge so far.
        self.loaded = 0
        #: Seconds spent loading them (VICI round trips, reconnects included).
        self.seconds = 0.0
        #: Why PSKs could not be loaded (tunnel id and charon's words; never the PSK).
        self.failures: list[str] = []

    def __repr__(self) -> str:
        return f"<Bridge {self.socket_path} loaded={self.loaded} failures={len(self.failures)}>"

    @property
    def seconds_per_psk(self) -> float | None:
        """The mean cost of loading one PSK, or None before the first."""
        return self.seconds / self.loaded if self.loaded else None

    def __call__(self, tunnel: Tunnel, record: PSKRecord) -> None:
        """The listener: ``EmulatorState`` calls it right after storing a PSK."""
        if tunnel.ipsec_id in self._identities:
            self.load(tunnel.id, tunnel.ipsec_id, record.psk)

    def sync(self) -> None:
        """Load the current PSK of every lab tunnel that has one (:func:`bridge` does this
        once, before listening)."""
        for account in self.state.accounts.values():
            for tunnel in account.tunnels.values():
                if tunnel.psk is not None and tunnel.ipsec_id in self._identities:
                    self.load(tunnel.id, tunnel.ipsec_id, tunnel.psk)

    def load(self, tunnel_id: str, ipsec_id: str, psk: str) -> None:
        """Load one PSK into the edge now; :class:`IKELabError` (after noting it in
        :attr:`failures`) if the edge does not take it."""
        with self._lock:
            if self._closed:
                raise IKELabError("the bridge is closed")
            started = time.perf_counter()
            failure: str | None = None
            try:
                self._connected().load_shared(_edge_key(ipsec_id, psk))
            except Exception as exc:  # socket errors, vici's CommandException
                failure = f"{type(exc).__name__}: {exc}".replace(psk, "[REDACTED]")
                self._disconnect()  # the next PSK reconnects
            finally:
                self.seconds += time.perf_counter() - started
            if failure is None:
                self.loaded += 1
                return
            text = f"tunnel {tunnel_id}: the edge did not take its PSK ({failure})"
            self.failures.append(text)
        # Raised outside the except clause: vici's exception (whose frames hold the PSK)
        # does not become this one's context.
        raise IKELabError(text)

    def _connected(self) -> Any:
        if self._session is None:
            sock = socket.socket(socket.AF_UNIX)
            try:
                sock.settimeout(_BRIDGE_TIMEOUT)
                sock.connect(self.socket_path)
            except BaseException:
                sock.close()
                raise
            self._socket, self._session = sock, self._vici.Session(sock)
        return self._session

    def _disconnect(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket, self._session = None, None

    def close(self) -> None:
        """Stop listening and close the connection to the edge (safe to call twice)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._disconnect()
        self.state.remove_psk_listener(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def bridge(state: EmulatorState, lab: IKELab) -> Bridge:
    """Keep the edge's PSKs equal to the emulator's, for the lab's tunnels.

    Loads the current PSK of every lab tunnel that has one, then registers a listener on
    ``state`` that loads every PSK the emulator stores afterwards (generated, set in bulk,
    stored late), before the request's answer leaves. Returns the :class:`Bridge`;
    ``bridge.close()``, or ``with bridge(state, lab):``, unregisters it. Tunnels are matched
    by ``ipsec_id``; the emulator's other tunnels are ignored. This blocks the event loop
    for one VICI round trip per PSK (see :attr:`Bridge.seconds_per_psk`).
    """
    link = Bridge(state, lab)
    try:
        link.sync()
    except BaseException:
        link._disconnect()
        raise
    state.add_psk_listener(link)
    return link
