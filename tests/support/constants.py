"""Ids, credentials and URLs shared by the unit tests (aioresponses, no real server)."""

from __future__ import annotations

__all__ = ["ACCOUNT", "BASE", "EMAIL", "KEY", "PSK", "PSK_URL", "TOKEN", "TUNNEL"]

ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
TUNNEL = "c4a7362d577a6c3019a474fd6f485823"
TOKEN = "tok-SECRET-0123456789abcdef"
KEY = "key-SECRET-0123456789abcdef"
EMAIL = "ops@example.com"
BASE = "https://api.cloudflare.com/client/v4"
PSK_URL = f"{BASE}/accounts/{ACCOUNT}/magic/ipsec_tunnels/{TUNNEL}/psk_generate"
PSK = "O3bwKSjnaoCxDoUxjcq4Rk8ZKkezQUiy"  # the spec's example
