"""Loaded (``-p _official_sdk_plugin``) into the pytest that runs Cloudflare's own SDK tests.

Their tests are written for Prism, a mock that keeps no state: each assumes the server as
seeded, whatever the tests before it did. Before each test this restores the emulator's
tunnels to its checkpoint (``POST /__emulator__/restore``), so every test meets the seeded
emulator, and the emulator itself stays stateful (names unique, a deleted tunnel gone).
"""

from __future__ import annotations

import os
import urllib.request

import pytest

#: Where the emulator's admin routes are (set by the test that runs the official suite).
ADMIN_URL_ENV = "MAGICWAN_EMULATOR_ADMIN_URL"


@pytest.fixture(autouse=True)
def _restore_the_seeded_emulator() -> None:
    admin = os.environ[ADMIN_URL_ENV]
    if not admin.startswith("http://127.0.0.1:"):  # loopback only, never anything else
        raise RuntimeError(f"{ADMIN_URL_ENV} must be a loopback http URL")
    request = urllib.request.Request(admin + "/restore", data=b"{}", method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - checked above
        assert answer.status == 200
