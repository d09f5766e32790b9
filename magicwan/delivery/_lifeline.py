"""Run a delivery program so that it dies with magicwan: a small supervisor process.

:class:`~magicwan.delivery.Command` starts this file (``python -I -S _lifeline.py FD --
PROGRAM ARGS...``) as the leader of a new process group, holding the write end of a
pipe whose read end is ``FD``. The supervisor starts the program in its own group and
waits for it. When magicwan exits, however it exits (``kill -9`` included), the kernel
closes the write end: the supervisor reads end of file and kills its whole process
group (the program and everything it started) with SIGKILL.

Why not ``prctl(PR_SET_PDEATHSIG)`` in the program: it needs code between fork and exec
(``preexec_fn``, unsafe with threads), it fires when the *thread* that forked dies rather
than the process, it is cleared for a set-user-ID program (``sudo push-psk``), it
reaches only the program and not its children, and it is Linux-only. A pipe's end of
file has none of these limits.

The supervisor's exit mirrors the program's: the same status, or death by the same
signal. If the program cannot be started, the supervisor writes ``"<errno> <strerror>"``
on its standard output and exits with status 127; otherwise it closes its standard
output at once (the program's is ``/dev/null``). This file imports only the standard
library, since it runs with ``-S`` (no site-packages).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys

__all__ = ["main"]

#: Signals the supervisor itself ignores once the program runs, so that it outlives
#: the program (and reports its end) whatever the terminal or a service manager sends.
_IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
#: Signals Python ignores at start-up that a program expects at their default.
_DEFAULTS = (signal.SIGPIPE, signal.SIGXFSZ)


def _spawn(argv: list[str]) -> int:
    """Start ``argv`` (searched in PATH) with /dev/null for standard output; OSError if it
    cannot be started. No ``subprocess``: its import would double this process's start."""
    return os.posix_spawnp(
        argv[0],
        argv,
        os.environ,
        file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)],
        setsigdef=_DEFAULTS,
    )


def _kill_group() -> None:
    os.killpg(0, signal.SIGKILL)


def _wait_watching(pid: int, lifeline: int) -> int:
    """The program's wait status; the group is killed first if the lifeline closes."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux 5.3 or later: a thread watches instead
        import threading

        def watch() -> None:
            with contextlib.suppress(OSError):
                while os.read(lifeline, 64):
                    pass
            _kill_group()

        threading.Thread(target=watch, daemon=True).start()
    else:
        poller = select.poll()  # not select(): the lifeline's number may exceed FD_SETSIZE
        poller.register(pidfd, select.POLLIN)
        poller.register(lifeline, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if pidfd in ready:
                break
            with contextlib.suppress(OSError):
                if os.read(lifeline, 64):
                    continue  # nobody writes to it; but data is not an end
            _kill_group()
    _, status = os.waitpid(pid, 0)
    return status


def main(argv: list[str]) -> int:
    """Run ``argv[3:]`` watched by the lifeline on fd ``argv[1]``; return its exit status."""
    lifeline = int(argv[1])
    os.set_inheritable(lifeline, False)
    try:
        pid = _spawn(argv[3:])
    except OSError as exc:
        report = f"{exc.errno or 0} {exc.strerror or type(exc).__name__}"
        os.write(1, report.encode("utf-8", "replace"))
        return 127
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # end of file on the report pipe: the program started
    os.close(null)
    for ignored in _IGNORED:
        signal.signal(ignored, signal.SIG_IGN)
    status = _wait_watching(pid, lifeline)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    number = os.WTERMSIG(status)
    # Die of the program's signal, so the parent sees what killed it (without a core file).
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, ValueError):  # SIGKILL's action cannot be set
        signal.signal(number, signal.SIG_DFL)
    os.kill(os.getpid(), number)
    return 128 + number


if __name__ == "__main__":
    os._exit(main(sys.argv))
