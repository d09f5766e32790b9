"""Pure: the rollout window that bounds how many tunnels a broken router can cost."""

from __future__ import annotations

import attrs

__all__ = ["RolloutWindow"]


@attrs.define
class RolloutWindow:
    """How many tunnels may have a new PSK live at the edge and not yet delivered.

    It starts at one tunnel (a canary), grows by one with every delivery that succeeds
    (so it doubles every round of deliveries, as TCP's slow start does) up to ``limit``,
    and halves with every tunnel that fails. A deliverer that always fails therefore
    costs one tunnel at a time, and the rotation halts after ``halt_after`` of them.
    """

    limit: int
    size: int = 1

    def __attrs_post_init__(self) -> None:
        self.size = max(1, min(self.size, self.limit))

    def widen(self) -> None:
        """A delivery succeeded."""
        self.size = min(self.limit, self.size + 1)

    def narrow(self) -> None:
        """A tunnel failed."""
        self.size = max(1, self.size // 2)

    def room(self, exposed: int) -> int:
        """How many more tunnels may start while ``exposed`` are live and undelivered."""
        return max(0, self.size - exposed)
