"""Models of the PSK endpoints: generate one, set many."""

from __future__ import annotations

from datetime import datetime

import attrs

__all__ = ["AppliedPSK", "PSKGenerateResult", "PSKMetadata", "PSKSetResult"]


@attrs.frozen(kw_only=True)
class PSKMetadata:
    """When the tunnel's PSK was last generated (timezone-aware, UTC).

    None when the answer gave no usable stamp (a PSK is never discarded for it).
    """

    last_generated_on: datetime | None = None


@attrs.frozen(kw_only=True)
class PSKGenerateResult:
    """The answer of ``psk_generate``. ``psk`` is None only for ``validate_only``.

    The PSK is left out of ``repr``: it can never be read back from Cloudflare, so
    store it before anything else, and never log it. ``ipsec_id`` is the IKE identity
    the customer's device presents for the tunnel (None when the answer has none).
    """

    ipsec_tunnel_id: str
    psk: str | None = attrs.field(default=None, repr=False)
    psk_metadata: PSKMetadata | None = None
    ipsec_id: str | None = None


@attrs.frozen(kw_only=True)
class AppliedPSK:
    """One PSK that a bulk set applied."""

    ipsec_tunnel_id: str
    ipsec_id: str | None = None
    psk: str = attrs.field(repr=False)
    psk_metadata: PSKMetadata | None = None


@attrs.frozen(kw_only=True)
class PSKSetResult:
    """The answer of a bulk PSK set: what was applied, and why the rest was not.

    ``applied`` maps tunnel id to :class:`AppliedPSK`; ``unapplied`` maps tunnel id to
    Cloudflare's reason (scrubbed of the PSKs sent). ``missing`` lists the tunnels sent
    that the answer neither applied nor refused (a cut or partial answer): each may hold
    the PSK sent for it.
    """

    applied: dict[str, AppliedPSK] = attrs.field(factory=dict)
    unapplied: dict[str, str] = attrs.field(factory=dict)
    missing: tuple[str, ...] = ()
