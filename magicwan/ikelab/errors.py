"""The IKE lab's one exception."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["IKELabError"]


class IKELabError(Exception):
    """The daemons could not be started, or a lab command failed.

    ``log`` holds the lines charon streamed during the command (``initiate``), which say
    why it failed (``received AUTHENTICATION_FAILED notify error``...).
    """

    def __init__(self, message: str, *, log: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.log: tuple[str, ...] = tuple(log)
