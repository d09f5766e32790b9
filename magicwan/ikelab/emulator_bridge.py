"""The bridge: every PSK the emulator stores, loaded into the IKE lab's edge before the answer
that carries it leaves, so the edge (Cloudflare's side) always holds what Cloudflare would."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from magicwan.ikelab.config import edge_key
from magicwan.ikelab.errors import IKELabError
from magicwan.ikelab.prerequisites import import_vici
from magicwan.internal.redaction import describe_error

if TYPE_CHECKING:
    from magicwan.emulator.models import PSKRecord, Tunnel
    from magicwan.emulator.state import EmulatorState
    from magicwan.ikelab.lab import IKELab

__all__ = ["Bridge", "bridge"]

#: How long the bridge waits for the edge to take one PSK before giving up on it.
_TIMEOUT = 10.0


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
        self._vici = import_vici()
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
                self._connected().load_shared(edge_key(ipsec_id, psk))
            except Exception as exc:  # socket errors, vici's CommandException
                failure = describe_error(exc, [psk])
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
                sock.settimeout(_TIMEOUT)
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
