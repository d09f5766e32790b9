"""Deliver a PSK by running a program: the PSK on its standard input, facts in its environment."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from magicwan.delivery._errors import DeliveryError, DeliveryFailure
from magicwan.delivery._model import Delivery, DeliveryTarget
from magicwan.delivery._text import scrub_tail
from magicwan.delivery._vici import Secret
from magicwan.internal.env import ENV_API_KEY, ENV_API_TOKEN, ENV_BASE_URL, ENV_EMAIL
from magicwan.internal.validation import check_seconds, is_printable_psk

__all__ = ["CHECK_VARIABLE", "ENVIRONMENT", "EX_CONFIG", "Command"]

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

#: Set to ``"1"`` when :meth:`Command.check` runs the program (no PSK on its standard
#: input); never set for a delivery, even when the caller's environment has it.
CHECK_VARIABLE = "MAGICWAN_CHECK"

#: The exit status (``EX_CONFIG`` of ``sysexits.h``) by which a program says that its
#: failure is permanent (no such router in its inventory, say): the delivery is not
#: retried. Any other non-zero status is retried.
EX_CONFIG = 78

#: Never passed on to a program: the API credentials (and base URL) magicwan reads.
_CREDENTIALS = (ENV_API_TOKEN, ENV_API_KEY, ENV_EMAIL, ENV_BASE_URL)

#: The prefix of the variables ``journal export --format env`` writes: never passed on.
_EXPORTED_PSK = "MAGICWAN_PSK_"

#: The supervisor that kills the program when magicwan dies (run as a script, not imported).
_LIFELINE = Path(__file__).with_name("_lifeline.py")

#: Why a program could not be started that starting it again will not change.
_PERMANENT_ERRNOS = frozenset(
    {errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR, errno.EISDIR, errno.EPERM}
)

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
    :data:`ENVIRONMENT`. Its standard output is discarded. The program may be run again
    for the same tunnel and PSK (a retry, a resumed run), so it must be idempotent.

    It runs in a process group of its own, which is killed (SIGKILL) on timeout, when
    the delivery is cancelled, and when magicwan's process ends in any way, ``kill -9``
    included: a small supervisor (``python -I -S``, see ``magicwan/delivery/_lifeline.py``)
    kills the group when its pipe from magicwan closes. Where ``sys.executable`` cannot
    be run, the program is started directly and only the first two hold. A program
    that leaves its process group (``setsid``) escapes all three.

    A failure to start, a non-zero exit status, death by a signal, or a timeout raises
    :class:`~magicwan.delivery.DeliveryError`; its message ends with the last few
    hundred characters of the program's standard error, with the PSK replaced by
    ``[REDACTED]`` (where the program echoed it verbatim) and control characters escaped.
    The error is ``permanent`` when the program does not exist or may not be run, or
    when it exits with :data:`EX_CONFIG` (78).

    :meth:`check` (the :class:`~magicwan.delivery.Checkable` protocol) sees that the
    program exists and may be run; with ``run_check=True`` it also runs it with
    ``MAGICWAN_CHECK=1`` (:data:`CHECK_VARIABLE`), the tunnel's facts and an empty
    standard input. Only a program written for that contract may be run so: it must
    then change nothing and exit 0 if it could deliver to the tunnel (the router
    answers, its credentials work). A program unaware of it would read an empty PSK.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        run_check: bool = False,
    ) -> None:
        if isinstance(argv, str | bytes) or not argv:
            raise TypeError("argv must be a non-empty sequence of strings (no shell parsing)")
        if not all(isinstance(arg, str) for arg in argv):
            raise TypeError("argv must be a sequence of strings")
        check_seconds(timeout, "timeout")
        self.argv: tuple[str, ...] = tuple(argv)
        self.timeout = timeout
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.run_check = run_check

    def __repr__(self) -> str:
        return f"Command({list(self.argv)!r}, timeout={self.timeout!r})"

    def environment(self, delivery: DeliveryTarget) -> dict[str, str]:
        """The environment the program runs with for ``delivery``; it never holds the PSK
        (nor any ``MAGICWAN_PSK_*`` variable of an exported journal), nor the Cloudflare
        credentials magicwan reads (a program that pushes a PSK to a router has no
        business with the API token)."""
        environ = dict(os.environ if self.env is None else self.env)
        for name in (*_CREDENTIALS, CHECK_VARIABLE):
            environ.pop(name, None)
        for name in [name for name in environ if name.startswith(_EXPORTED_PSK)]:
            del environ[name]  # `journal export --format env`, sourced: every tunnel's PSK
        for variable, attribute in ENVIRONMENT.items():
            value = getattr(delivery, attribute)
            environ[variable] = value if value is not None else ""
        return environ

    async def check(self, target: DeliveryTarget) -> None:
        """Check, without a PSK, that a delivery to ``target`` could be made.

        The program must exist and be executable (looked up in the ``PATH`` of its
        environment, like a delivery); with ``run_check=True`` it is also run with
        ``MAGICWAN_CHECK=1`` and an empty standard input, and must exit 0. Raises
        :class:`~magicwan.delivery.DeliveryError` saying what is wrong.
        """
        environ = self.environment(target)
        problem = self._unrunnable(environ)
        if problem is not None:
            raise DeliveryError(
                f"tunnel {target.tunnel_id}: {problem}",
                reason="not_started",
                tunnel_id=target.tunnel_id,
            )
        if self.run_check:
            environ[CHECK_VARIABLE] = "1"
            await self._run(target.tunnel_id, None, environ)

    def _unrunnable(self, environ: Mapping[str, str]) -> str | None:
        """Why the program cannot be run, or None (as far as can be told without running it)."""
        program = self.argv[0]
        if os.sep in program or (os.altsep and os.altsep in program):
            path = Path(self.cwd or ".", program)
            if not path.exists():
                return f"{program!r} does not exist"
            if path.is_dir() or not os.access(path, os.X_OK):
                return f"{program!r} is not an executable file"
            return None
        search = environ.get("PATH", os.defpath)
        if shutil.which(program, path=search) is None:
            return f"{program!r} is not an executable file in PATH ({search})"
        return None

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
        await self._run(tunnel_id, Secret(delivery.psk), self.environment(delivery))

    async def _run(self, tunnel_id: str, psk: Secret | None, environ: dict[str, str]) -> None:
        """Run the program once with ``psk`` (and a newline) on its standard input, or
        nothing; DeliveryError unless it exits 0. No frame here holds the PSK bare: a
        traceback printed with its locals must not show it."""
        stdin_read, stdin_write = os.pipe()
        stderr_read, stderr_write = os.pipe()
        lifeline_read, lifeline_write = os.pipe()
        try:
            try:
                # Into the pipe before the program starts: it fits, so this never blocks.
                os.write(stdin_write, f"{psk.reveal()}\n".encode() if psk is not None else b"")
                os.close(stdin_write)
                stdin_write = -1
                process = await self._start(environ, stdin_read, stderr_write, lifeline_read)
            except BaseException as exc:
                os.close(stderr_read)
                if isinstance(exc, OSError):  # the supervisor (or the program) did not start
                    raise _not_started(tunnel_id, self.argv[0], exc.errno, exc.strerror) from None
                raise
            finally:
                for fd in (stdin_read, stdin_write, stderr_write, lifeline_read):
                    if fd >= 0:
                        os.close(fd)
            await self._finish(tunnel_id, process, stderr_read, psk)
        finally:
            # The supervisor has exited (or was killed with its group) by now; closing
            # this end earlier would kill the program.
            os.close(lifeline_write)

    async def _finish(
        self,
        tunnel_id: str,
        process: asyncio.subprocess.Process,
        stderr_fd: int,
        psk: Secret | None,
    ) -> None:
        stderr = _StderrTail(stderr_fd)
        report = b""
        try:
            try:
                report = await asyncio.wait_for(_report_and_wait(process), self.timeout)
                timed_out = False
            except TimeoutError:
                timed_out = True
                _kill_group(process)
                await process.wait()
            tail = await stderr.finish(psk.reveal() if psk is not None else "")
        finally:
            if process.returncode is None:  # cancelled: leave nothing running behind us
                _kill_group(process)
                await asyncio.shield(process.wait())
            stderr.close()

        program = self.argv[0]
        status = process.returncode
        if report:
            number, _, text = report.decode("utf-8", "replace").partition(" ")
            raise _not_started(tunnel_id, program, int(number) if number.isdigit() else 0, text)
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
            if status == EX_CONFIG:
                message += " (EX_CONFIG: a permanent failure, not retried)"
        if tail:
            message += f"; stderr: {tail}"
        raise DeliveryError(
            f"tunnel {tunnel_id}: {message}",
            reason=reason,
            tunnel_id=tunnel_id,
            permanent=status == EX_CONFIG,
        )

    async def _start(
        self, environ: dict[str, str], stdin: int, stderr: int, lifeline: int
    ) -> asyncio.subprocess.Process:
        supervisor = _supervisor(lifeline)
        return await asyncio.create_subprocess_exec(
            *supervisor,
            *self.argv,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE if supervisor else asyncio.subprocess.DEVNULL,
            stderr=stderr,
            env=environ,
            cwd=self.cwd,
            start_new_session=True,
            pass_fds=(lifeline,) if supervisor else (),
        )


def _supervisor(lifeline: int) -> list[str]:
    """The command line that runs a program under :mod:`._lifeline`; [] if it cannot be."""
    if not sys.executable or not _LIFELINE.is_file():
        return []  # an embedded interpreter or a zipped install: no supervisor
    return [sys.executable, "-I", "-S", str(_LIFELINE), str(lifeline), "--"]


async def _report_and_wait(process: asyncio.subprocess.Process) -> bytes:
    """What the supervisor reported (empty: the program started), once it has exited."""
    report = await process.stdout.read() if process.stdout is not None else b""
    await process.wait()
    return report


def _not_started(
    tunnel_id: str, program: str, number: int | None, text: str | None
) -> DeliveryError:
    return DeliveryError(
        f"tunnel {tunnel_id}: cannot start {program!r}: {text or 'unknown error'}",
        reason="not_started",
        tunnel_id=tunnel_id,
        permanent=number in _PERMANENT_ERRNOS,
    )


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
