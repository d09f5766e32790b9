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
import resource
import signal
import subprocess
import sys
import threading

__all__ = ["main"]

#: Signals the supervisor itself ignores once the program runs, so that it outlives
#: the program (and reports its end) whatever the terminal or a service manager sends.
_IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _watch(fd: int) -> None:
    """Block until the parent's end of the lifeline closes; then kill the process group."""
    while True:
        try:
            if not os.read(fd, 64):
                break
        except OSError:
            break
    os.killpg(0, signal.SIGKILL)


def main(argv: list[str]) -> int:
    """Run ``argv[3:]`` watched by the lifeline on fd ``argv[1]``; return its exit status."""
    lifeline = int(argv[1])
    os.set_inheritable(lifeline, False)
    try:
        program = subprocess.Popen(argv[3:], stdout=subprocess.DEVNULL)  # noqa: S603 - the caller's argv
    except OSError as exc:
        report = f"{exc.errno or 0} {exc.strerror or type(exc).__name__}"
        os.write(1, report.encode("utf-8", "replace"))
        return 127
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # end of file on the report pipe: the program started
    os.close(null)
    for number in _IGNORED:
        signal.signal(number, signal.SIG_IGN)
    threading.Thread(target=_watch, args=(lifeline,), daemon=True).start()
    status = program.wait()
    if status >= 0:
        return status
    # Die of the program's signal, so the parent sees what killed it (without a core file).
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, ValueError):  # SIGKILL's action cannot be set
        signal.signal(-status, signal.SIG_DFL)
    os.kill(os.getpid(), -status)
    return 128 - status


if __name__ == "__main__":
    sys.stdout.flush()
    os._exit(main(sys.argv))
