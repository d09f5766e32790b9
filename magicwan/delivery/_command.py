"""Deliver a PSK by running a program: the PSK on its standard input, facts in its environment."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence

from magicwan._env import ENV_API_KEY, ENV_API_TOKEN, ENV_BASE_URL, ENV_EMAIL
from magicwan._validation import is_printable_psk
from magicwan.delivery._errors import DeliveryError, DeliveryFailure
from magicwan.delivery._model import Delivery
from magicwan.delivery._text import scrub_tail

__all__ = ["ENVIRONMENT", "Command"]

#: The environment variables a :class:`Command` sets for its program, each with the
#: :class:`~magicwan.delivery.Delivery` attribute it comes from. All of them are always
#: set; an unknown fact is an empty string, so a value inherited from the caller's
#: environment can never pass for this tunnel's.
ENVIRONMENT: Mapping[str, str] = {
    "MAGICWAN_TUNNEL_ID": "tunnel_id",
    "MAGICWAN_TUNNEL_NAME": "name",
    "MAGICWAN_ACCOUNT_ID": "account_id",
    "MAGICWAN_IPSEC_ID": "ipsec_id",
    "MAGICWAN_CUSTOMER_ENDPOINT": "customer_endpoint",
    "MAGICWAN_CLOUDFLARE_ENDPOINT": "cloudflare_endpoint",
}

#: Never passed on to a program: the API credentials (and base URL) magicwan reads.
_CREDENTIALS = (ENV_API_TOKEN, ENV_API_KEY, ENV_EMAIL, ENV_BASE_URL)

#: The PSK is written into the program's input pipe before it starts; a pipe always
#: buffers at least one page, so up to this many bytes can never block.
_STDIN_MAX = 4096
#: How much of the program's standard error is kept (its end) for the error message.
_STDERR_KEEP = 16 * 1024
#: After the program exits, how long a child it left behind may keep its standard error
#: open before we stop reading it.
_STDERR_GRACE = 1.0


class Command:
    """Run ``argv`` once per delivery; it must exit with status 0 for the delivery to succeed.

    The program gets the PSK on its standard input, followed by a newline and end of
    file, and nowhere else: never in its arguments or its environment, which other
    users of the machine may read. Its environment is the caller's (or ``env``, when
    given) without the Cloudflare credentials, plus the tunnel's facts in the variables of
    :data:`ENVIRONMENT`. Its standard
    output is discarded. It runs in a process group of its own, which is killed
    (SIGKILL) on timeout or when the delivery is cancelled.

    A failure to start, a non-zero exit status, death by a signal, or a timeout raises
    :class:`~magicwan.delivery.DeliveryError`; its message ends with the last few
    hundred characters of the program's standard error, with the PSK replaced by
    ``[REDACTED]`` (where the program echoed it verbatim) and control characters escaped.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(argv, str | bytes) or not argv:
            raise TypeError("argv must be a non-empty sequence of strings (no shell parsing)")
        if not all(isinstance(arg, str) for arg in argv):
            raise TypeError("argv must be a sequence of strings")
        if not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.argv: tuple[str, ...] = tuple(argv)
        self.timeout = timeout
        self.env = dict(env) if env is not None else None
        self.cwd = cwd

    def __repr__(self) -> str:
        return f"Command({list(self.argv)!r}, timeout={self.timeout!r})"

    def environment(self, delivery: Delivery) -> dict[str, str]:
        """The environment the program runs with for ``delivery``; it never holds the PSK,
        nor the Cloudflare credentials magicwan reads (a program that pushes a PSK to a
        router has no business with the API token)."""
        environ = dict(os.environ if self.env is None else self.env)
        for name in _CREDENTIALS:
            environ.pop(name, None)
        for variable, attribute in ENVIRONMENT.items():
            value = getattr(delivery, attribute)
            environ[variable] = value if value is not None else ""
        return environ

    async def __call__(self, delivery: Delivery) -> None:
        """Run the program for ``delivery``; raise :class:`DeliveryError` unless it succeeds."""
        tunnel_id = delivery.tunnel_id
        if len(delivery.psk.encode()) >= _STDIN_MAX:
            raise DeliveryError(
                f"tunnel {tunnel_id}: the PSK is too long to hand to a program",
                reason="misconfigured",
                tunnel_id=tunnel_id,
            )
        if delivery.psk and not is_printable_psk(delivery.psk):
            # One line on stdin: a newline (or any control character) would hand the
            # program part of the PSK, which it would install and report as done.
            raise DeliveryError(
                f"tunnel {tunnel_id}: the PSK holds characters other than printable ASCII "
                "without spaces; it is not handed to a program",
                reason="misconfigured",
                tunnel_id=tunnel_id,
            )
        stdin_read, stdin_write = os.pipe()
        stderr_read, stderr_write = os.pipe()
        try:
            # Into the pipe before the program starts: it fits, so this never blocks.
            os.write(stdin_write, delivery.psk.encode() + b"\n")
            os.close(stdin_write)
            stdin_write = -1
            process, failure = await self._start(delivery, stdin_read, stderr_write)
        except BaseException:
            os.close(stderr_read)
            raise
        finally:
            for fd in (stdin_read, stdin_write, stderr_write):
                if fd >= 0:
                    os.close(fd)
        if process is None:
            os.close(stderr_read)
            raise DeliveryError(
                f"tunnel {tunnel_id}: {failure}", reason="not_started", tunnel_id=tunnel_id
            )

        stderr = _StderrTail(stderr_read)
        try:
            try:
                await asyncio.wait_for(process.wait(), self.timeout)
                timed_out = False
            except TimeoutError:
                timed_out = True
                _kill_group(process)
                await process.wait()
            tail = await stderr.finish(delivery.psk)
        finally:
            if process.returncode is None:  # cancelled: leave nothing running behind us
                _kill_group(process)
                await asyncio.shield(process.wait())
            stderr.close()

        program = self.argv[0]
        status = process.returncode
        reason: DeliveryFailure = "exit_status"
        if timed_out or status is None:
            message = f"{program!r} did not finish within {self.timeout:g}s and was killed"
            reason = "timeout"
        elif status == 0:
            return
        elif status < 0:
            message = f"{program!r} was killed by {_signal_name(-status)}"
        else:
            message = f"{program!r} exited with status {status}"
        if tail:
            message += f"; stderr: {tail}"
        raise DeliveryError(f"tunnel {tunnel_id}: {message}", reason=reason, tunnel_id=tunnel_id)

    async def _start(
        self, delivery: Delivery, stdin: int, stderr: int
    ) -> tuple[asyncio.subprocess.Process | None, str]:
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=stdin,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
                env=self.environment(delivery),
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            return None, f"cannot start {self.argv[0]!r}: {exc.strerror or type(exc).__name__}"
        return process, ""


class _StderrTail:
    """Reads the program's standard error as it comes, keeping only its last bytes."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._data = bytearray()
        self._head_cut = False
        self._loop = asyncio.get_running_loop()
        self._ended: asyncio.Future[None] = self._loop.create_future()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._loop.remove_reader(self._fd)
            if not self._ended.done():
                self._ended.set_result(None)
            return
        self._data += chunk
        if len(self._data) > _STDERR_KEEP:
            del self._data[: len(self._data) - _STDERR_KEEP]
            self._head_cut = True

    async def finish(self, secret: str) -> str:
        """The scrubbed end of the output, once it ends (or after a short grace)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._ended), _STDERR_GRACE)
        return scrub_tail(bytes(self._data), secret, head_cut=self._head_cut)

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
