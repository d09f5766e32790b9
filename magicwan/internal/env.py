"""The environment variables magicwan reads, named in one place.

The credential and base-URL names are those of Cloudflare's official SDK, so one environment
serves both. ``CLOUDFLARE_ACCOUNT_ID`` is what the command line falls back to when no account
is given (and what ``python -m magicwan.emulator`` exports).
"""

from __future__ import annotations

from typing import Final

__all__ = ["ENV_ACCOUNT_ID", "ENV_API_KEY", "ENV_API_TOKEN", "ENV_BASE_URL", "ENV_EMAIL"]

ENV_API_TOKEN: Final = "CLOUDFLARE_API_TOKEN"  # noqa: S105 - a variable's name, not a secret
ENV_EMAIL: Final = "CLOUDFLARE_EMAIL"
ENV_API_KEY: Final = "CLOUDFLARE_API_KEY"
ENV_BASE_URL: Final = "CLOUDFLARE_BASE_URL"
ENV_ACCOUNT_ID: Final = "CLOUDFLARE_ACCOUNT_ID"
