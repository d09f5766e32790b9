"""Models of the PSK generation endpoint."""

from __future__ import annotations

from datetime import datetime

import attrs

__all__ = ["PSKGenerateResult", "PSKMetadata"]


@attrs.frozen(kw_only=True)
class PSKMetadata:
    """When the tunnel's PSK was last generated (timezone-aware, UTC)."""

    last_generated_on: datetime | None = None


@attrs.frozen(kw_only=True)
class PSKGenerateResult:
    """The answer of ``psk_generate``. ``psk`` is None only for ``validate_only``.

    The PSK is left out of ``repr``: it can never be read back from Cloudflare, so
    store it before anything else, and never log it.
    """

    ipsec_tunnel_id: str
    psk: str | None = attrs.field(default=None, repr=False)
    psk_metadata: PSKMetadata | None = None
