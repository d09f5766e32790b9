"""Making PSKs on the client side (for the bulk set endpoint)."""

from __future__ import annotations

import secrets
import string

__all__ = ["MAX_PSK_LENGTH", "MIN_PSK_LENGTH", "PSK_ALPHABET", "PSK_LENGTH", "new_psk"]

PSK_ALPHABET = string.ascii_letters + string.digits
#: 32 characters from 62 symbols: about 190 bits, like the PSKs Cloudflare generates.
PSK_LENGTH = 32
#: Bounds of a PSK the SDK sends (Cloudflare publishes none; docs/emulator.md, Assumptions).
MIN_PSK_LENGTH = 16
MAX_PSK_LENGTH = 128


def new_psk() -> str:
    """A new PSK: 32 characters from ``[A-Za-z0-9]``, drawn with :mod:`secrets`."""
    return "".join(secrets.choice(PSK_ALPHABET) for _ in range(PSK_LENGTH))
