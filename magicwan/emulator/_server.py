"""Running the emulator on a real socket: ``run()`` and the ``Emulator`` handle it yields."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from aiohttp import web

from magicwan.emulator.app import ADMIN_PREFIX, API_PREFIX, create_app
from magicwan.emulator.faults import Faults
from magicwan.emulator.state import (
    DEFAULT_API_EMAIL,
    DEFAULT_API_KEY,
    DEFAULT_API_TOKEN,
    DEFAULT_RATE_LIMIT,
    EmulatorState,
)

__all__ = ["Emulator", "run"]

#: Listen backlog, so a benchmark opening 1000+ connections at once is not refused.
_BACKLOG = 4096
#: How long shutdown waits for in-flight requests (e.g. a latency fault) before cancelling them.
_SHUTDOWN_TIMEOUT = 2.0


class Emulator:
    """A running emulator: where it listens, its credentials, and its live ``state``."""

    def __init__(self, state: EmulatorState, *, root_url: str) -> None:
        self.state = state
        #: ``http://127.0.0.1:PORT`` (``https://`` when serving TLS).
        self.root_url = root_url
        #: The API base URL, ending in ``/client/v4``.
        self.base_url = root_url + API_PREFIX
        #: The admin base URL (``.../__emulator__``): state, reset, tunnels, faults, rate_limit.
        self.admin_url = root_url + ADMIN_PREFIX
        self.account_id = state.account_id
        self.api_token = state.user.api_tokens[0]
        self.api_email = state.user.email
        self.api_key = state.user.api_key

    def __repr__(self) -> str:
        return f"<Emulator {self.base_url} account={self.account_id}>"

    @property
    def tunnel_ids(self) -> list[str]:
        """Ids of the default account's tunnels, in creation order."""
        return self.state.tunnel_ids

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self.state.faults

    def set_faults(self, faults: Faults, *, seed: int | None = None) -> None:
        """Change the injected faults at runtime; ``seed`` restarts the fault sequence."""
        self.state.set_faults(faults, seed=seed)

    def set_rate_limit(self, rate_limit: tuple[int, float] | None) -> None:
        """Change the rate limit at runtime (``(limit, window_seconds)`` or None for off)."""
        self.state.set_rate_limit(rate_limit)

    def env(self) -> dict[str, str]:
        """The environment variables the CLI prints, for a client in a subprocess."""
        return {
            "MAGICWAN_BASE_URL": self.base_url,
            "MAGICWAN_ACCOUNT_ID": self.account_id,
            "CLOUDFLARE_API_TOKEN": self.api_token,
            "CLOUDFLARE_EMAIL": self.api_email,
            "CLOUDFLARE_API_KEY": self.api_key,
        }


@asynccontextmanager
async def run(
    *,
    tunnels: int = 10,
    rate_limit: tuple[int, float] | None = DEFAULT_RATE_LIMIT,
    seed: int = 0,
    faults: Faults | None = None,
    account_id: str | None = None,
    api_token: str = DEFAULT_API_TOKEN,
    api_email: str = DEFAULT_API_EMAIL,
    api_key: str = DEFAULT_API_KEY,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    clock: Callable[[], float] | None = None,
    utcnow: Callable[[], datetime] | None = None,
) -> AsyncIterator[Emulator]:
    """Serve a fresh emulator on ``host:port`` (0 = a free port) for the ``async with`` body.

    ``rate_limit`` is ``(limit, window_seconds)`` (Cloudflare's 1200/300 by default) or None;
    ``clock`` drives the limiter (default ``time.monotonic``); ``ssl_context`` serves HTTPS.
    """
    state = EmulatorState(
        tunnels=tunnels,
        seed=seed,
        account_id=account_id,
        api_token=api_token,
        api_email=api_email,
        api_key=api_key,
        rate_limit=rate_limit,
        faults=faults,
        clock=clock,
        utcnow=utcnow,
    )
    runner = web.AppRunner(create_app(state), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=_BACKLOG)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        scheme = "https" if ssl_context is not None else "http"
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield Emulator(state, root_url=f"{scheme}://{shown}:{bound_port}")
    finally:
        await runner.cleanup()
