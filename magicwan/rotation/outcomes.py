"""What a rotation hands over: one outcome per tunnel.

Every outcome shares :class:`Outcome`'s fields, so a consumer reads ``verified`` or
``delivered`` of any outcome without ``getattr``. Narrow with ``if outcome.ok:``.
"""

from __future__ import annotations

import enum
from typing import Literal

import attrs

from magicwan.errors import MagicWANError
from magicwan.models.psk import PSKGenerateResult
from magicwan.models.tunnels import IPsecTunnel

__all__ = [
    "Outcome",
    "OutcomeState",
    "RotationFailure",
    "RotationOutcome",
    "RotationSuccess",
    "Validated",
    "ValidationOutcome",
]


class OutcomeState(enum.Enum):
    """What happened to one tunnel (the value is what the CLI's JSON shows)."""

    #: A new PSK is live at Cloudflare, recorded, and delivered if ``deliver`` was given.
    ROTATED = "rotated"
    #: The journal already held this tunnel's new PSK: nothing was generated (a delivery
    #: may still have been made: see ``delivered``).
    SKIPPED = "skipped"
    #: ``validate_only``: the request would be accepted; nothing changed.
    VALIDATED = "validated"
    #: The rotation failed; ``error`` says why and ``outcome_unknown`` whether the tunnel
    #: may now hold a PSK other than the one the outcome carries.
    FAILED = "failed"
    #: The new PSK is live at Cloudflare (in ``result``) but did not reach the other end.
    UNDELIVERED = "undelivered"
    #: The new PSK is live at Cloudflare and in ``result``, but the journal could not
    #: record it: keep it yourself.
    UNRECORDED = "unrecorded"
    #: Never started: the rotation halted (``halt_after``) or its journal failed first.
    NOT_ATTEMPTED = "not_attempted"


@attrs.frozen(kw_only=True)
class Outcome:
    """The fields every outcome has.

    ``result`` carries the PSK the tunnel may now hold whenever there is one (also as
    ``psk``): never drop it. ``verified``: a read-back confirmed it after a retry had made
    it doubtful; ``unverified`` says why a doubtful PSK could not be checked. ``delivered``
    is None when no deliverer was given. ``outcome_unknown``: the tunnel may hold a PSK
    other than the one carried (a request whose answer was lost): rotate it again.
    """

    ok: bool
    tunnel_id: str
    state: OutcomeState
    error: MagicWANError | None = None
    result: PSKGenerateResult | None = None
    tunnel: IPsecTunnel | None = None
    attempts: int = 0
    verified: bool = False
    unverified: str | None = None
    delivered: bool | None = None
    #: Your deliverer's own exception, as it raised it: it may quote anything (print
    #: ``error``, which the SDK scrubbed), so it stays out of ``repr``.
    delivery_error: BaseException | None = attrs.field(default=None, repr=False)
    outcome_unknown: bool = False

    @property
    def psk(self) -> str | None:
        """The PSK the tunnel may now hold, or None."""
        return self.result.psk if self.result is not None else None

    @property
    def skipped(self) -> bool:
        """No new PSK was made in this run: the journal already had it."""
        return self.state is OutcomeState.SKIPPED


@attrs.frozen(kw_only=True)
class RotationSuccess(Outcome):
    """A tunnel whose rotation did everything asked: ``ok`` is always True and
    ``result.psk`` (also ``psk``) is the tunnel's current PSK."""

    ok: Literal[True] = True
    error: None = None
    result: PSKGenerateResult
    delivery_error: None = attrs.field(default=None, repr=False)
    outcome_unknown: Literal[False] = False

    @property
    def psk(self) -> str:
        """The tunnel's current PSK."""
        psk = self.result.psk
        assert psk is not None
        return psk


@attrs.frozen(kw_only=True)
class RotationFailure(Outcome):
    """A tunnel whose rotation did not do everything asked: ``ok`` is always False.

    ``error`` says why. ``result`` carries the PSK the tunnel may now hold whenever there
    is one (``UNDELIVERED``, ``UNRECORDED``, a set whose answer was lost, a regeneration
    that failed after an earlier PSK was received): never drop it.
    """

    ok: Literal[False] = False
    error: MagicWANError


@attrs.frozen(kw_only=True)
class Validated(Outcome):
    """``validate_only``: Cloudflare would accept the request; nothing changed. With
    ``method="set"`` ``result.psk`` is the PSK that was sent to be validated: keep it, a
    server that applied it anyway made it the tunnel's."""

    ok: Literal[True] = True
    state: OutcomeState = OutcomeState.VALIDATED
    error: None = None
    result: PSKGenerateResult


RotationOutcome = RotationSuccess | RotationFailure
ValidationOutcome = Validated | RotationFailure
