"""The one module that speaks to charon through strongSwan's own ``vici`` package.

``vici`` is untyped, synchronous and optional (``pip install 'magicwan[strongswan]'``):
everything here runs in a worker thread, and nothing here lets a ``vici`` exception
out. Those exceptions carry tracebacks whose frames hold the serialized request (with
the PSK in it), so each one is turned into a :class:`ViciError` with a plain
description, raised after the original is gone: never chained, never formatted.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any, Literal

__all__ = ["Channel", "Secret", "ViciError", "import_vici"]

_INSTALL_HINT = (
    "the StrongSwan deliverer needs the vici package: pip install 'magicwan[strongswan]'"
)

ViciFailure = Literal["unreachable", "timeout", "command", "protocol"]


def import_vici() -> ModuleType:
    """strongSwan's ``vici`` package, or an ImportError that says how to install it."""
    try:
        import vici  # type: ignore[import-untyped]
        import vici.exception  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return vici  # type: ignore[no-any-return]


class Secret:
    """A PSK on its way into a VICI message: ``str()`` gives it, ``repr()`` never does.

    ``vici`` encodes every value with ``str()``, so the message dict can hold this
    object and stay safe to print.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __str__(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret([REDACTED])"

    def reveal(self) -> str:
        return self._value


class ViciError(Exception):
    """A VICI call failed. ``detail`` is charon's own error text or a plain description."""

    def __init__(self, kind: ViciFailure, detail: str, log: Iterable[str] = ()) -> None:
        super().__init__(kind, detail)
        self.kind: ViciFailure = kind
        self.detail = detail
        #: charon's log lines streamed during the command (``initiate``, ``terminate``)
        self.log: tuple[str, ...] = tuple(log)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _failure(exc: BaseException) -> tuple[ViciFailure, str]:
    """A plain description of an exception from ``vici`` or the socket under it."""
    if isinstance(exc, TimeoutError):
        return "timeout", "charon did not answer in time"
    if isinstance(exc, OSError):
        return "unreachable", exc.strerror or str(exc) or type(exc).__name__
    return "protocol", f"unexpected answer from charon ({type(exc).__name__})"


class Channel:
    """One connection to charon's VICI socket, usable from one worker thread.

    :meth:`abort` may be called from any thread: it shuts the socket down, so a call
    blocked in the worker fails at once instead of waiting for charon.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._vici = import_vici()
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._session: Any = None
        self._aborted = False

    def connect(self, timeout: float) -> None:
        """Connect within ``timeout`` seconds.

        A full listen backlog (charon's workers are all busy and accept nothing for a
        moment) makes a unix socket refuse with EAGAIN at once: that is retried, with
        short pauses, until the time is up.
        """
        deadline = time.monotonic() + timeout
        pause = 0.01
        while True:
            sock = self._new_socket()
            failure: ViciError | None = None
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.connect(self.path)
            except BlockingIOError:  # the backlog is full: try again shortly
                if time.monotonic() + pause >= deadline:
                    failure = ViciError("timeout", f"{self.path} accepted no connection in time")
            except OSError as exc:
                kind, detail = _failure(exc)
                failure = ViciError(kind, f"cannot connect to {self.path}: {detail}")
            else:
                self._session = self._vici.Session(sock)
                return
            if failure is not None:
                raise failure
            time.sleep(pause)
            pause = min(pause * 2, 0.2)

    def _new_socket(self) -> socket.socket:
        """A fresh socket in place of the last one; ViciError once :meth:`abort` was called."""
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
            if self._aborted:
                raise ViciError("timeout", "aborted")
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            return self._socket

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            if self._socket is not None:
                with contextlib.suppress(OSError):
                    self._socket.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def set_timeout(self, timeout: float) -> None:
        assert self._socket is not None
        self._socket.settimeout(timeout)

    # -- commands -------------------------------------------------------------------------

    def request(self, command: str, message: dict[str, Any] | None = None) -> dict[str, Any]:
        """A plain command (``load-shared``, ``get-shared``...): its answer, or ViciError."""
        answer: dict[str, Any] = self._call(lambda: dict(self._session.request(command, message)))
        return answer

    def streamed(
        self, command: str, event: str, message: dict[str, Any] | None = None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """A command that streams events: the events, and the ``control-log`` lines."""
        log: list[str] = []
        events: list[dict[str, Any]] = []

        def run() -> None:
            for item in self._session.streamed_request(command, event, message):
                if event == "control-log":
                    log.append(_text(item.get("msg", b"")))
                else:
                    events.append(dict(item))

        self._call(run, log)
        return events, log

    def _call(self, fn: Callable[[], Any], log: list[str] | None = None) -> Any:
        failure: ViciError | None = None
        try:
            return fn()
        except self._vici.exception.CommandException as exc:
            detail = str(exc).removeprefix("Command failed: ")
            failure = ViciError("command", detail, log or ())
        except Exception as exc:  # socket errors, vici's SessionException, malformed answers
            failure = ViciError(*_failure(exc), log or ())
        # Raised here, after the except clause: the vici exception (and the frames holding
        # the serialized request) is gone and does not become this error's __context__.
        raise failure


def decoded(value: Any) -> Any:
    """A VICI answer with bytes turned into text, recursively."""
    if isinstance(value, bytes):
        return _text(value)
    if isinstance(value, dict):
        return {key: decoded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decoded(item) for item in value]
    return value


def iter_sas(events: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(connection name, IKE SA)`` pairs from ``list-sa`` events."""
    for event in events:
        for name, sa in decoded(event).items():
            if isinstance(sa, dict):
                yield name, sa
