"""Running the emulator on a real socket: ``run()`` and the ``Emulator`` handle it yields."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Unpack

from aiohttp import web
from aiohttp.typedefs import Middleware

from magicwan.emulator._wire import ADMIN_PREFIX, API_PREFIX
from magicwan.emulator.app import create_app
from magicwan.emulator.faults import Faults
from magicwan.emulator.state import EmulatorState, StateOptions
from magicwan.internal.env import ENV_ACCOUNT_ID, ENV_API_TOKEN, ENV_BASE_URL

__all__ = ["DEFAULT_GRE_TUNNELS", "DEFAULT_TUNNELS", "Emulator", "run"]

#: Tunnels ``run()`` and ``python -m magicwan.emulator`` create unless told otherwise.
DEFAULT_TUNNELS = 10
DEFAULT_GRE_TUNNELS = 3
#: Listen backlog, so a benchmark opening 1000+ connections at once is not refused.
_BACKLOG = 4096


class Emulator:
    """A running emulator: where it listens, its credentials, and its live ``state``."""

    def __init__(self, state: EmulatorState, *, root_url: str) -> None:
        self.state = state
        #: ``http://127.0.0.1:PORT`` (``https://`` when serving TLS).
        self.root_url = root_url
        #: The API base URL, ending in ``/client/v4``.
        self.base_url = root_url + API_PREFIX
        #: The admin base URL (``.../__emulator__``), which answers a GET with an index of
        #: its routes: state, reset, tunnels, checkpoint, restore, faults, rate_limit.
        self.admin_url = root_url + ADMIN_PREFIX
        self.account_id = state.account_id
        self.api_token = state.user.api_tokens[0]
        self.api_email = state.user.email
        self.api_key = state.user.api_key

    def __repr__(self) -> str:
        return f"<Emulator {self.base_url} account={self.account_id}>"

    @property
    def tunnel_ids(self) -> list[str]:
        """Ids of the default account's IPsec tunnels, in creation order."""
        return self.state.tunnel_ids

    @property
    def gre_tunnel_ids(self) -> list[str]:
        """Ids of the default account's GRE tunnels, in creation order."""
        return self.state.gre_tunnel_ids

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
        """What a client needs, as environment variables: ``CLOUDFLARE_BASE_URL``,
        ``CLOUDFLARE_API_TOKEN`` and ``CLOUDFLARE_ACCOUNT_ID`` (the token only: the client
        refuses a token together with an e-mail and key as ambiguous)."""
        return {
            ENV_BASE_URL: self.base_url,
            ENV_API_TOKEN: self.api_token,
            ENV_ACCOUNT_ID: self.account_id,
        }


@asynccontextmanager
async def run(
    *,
    state: EmulatorState | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    middlewares: Iterable[Middleware] = (),
    routes: Iterable[web.AbstractRouteDef] = (),
    shutdown_timeout: float = 2.0,
    **options: Unpack[StateOptions],
) -> AsyncIterator[Emulator]:
    """Serve an emulator on ``host:port`` (0 = a free port) for the ``async with`` body.

    It serves ``state`` if given; otherwise a fresh :class:`EmulatorState` built from
    ``options``, its keyword arguments (``tunnels`` (10 here), ``gre_tunnels`` (3 here),
    ``seed``, ``account_id``, ``api_token``, ``api_email``, ``api_key``, ``rate_limit``
    (Cloudflare's 1200/300 by default, or None), ``faults``, ``clock``, ``utcnow``,
    ``max_psk_batch``, ``psk_min_length``, ``psk_max_length``, ``ipsec_ids``, ``gre_ids``,
    ``tunnel_rules``). Giving both is a TypeError.

    ``ssl_context`` serves HTTPS. ``middlewares`` run outside the emulator's pipeline and see
    every request (e.g. a request tracker); ``routes`` (``aiohttp.web.get(...)`` and the like)
    are added after the emulator's own, and skip its pipeline when under ``/__emulator__/``.
    At exit the server stops within ``shutdown_timeout`` seconds: requests sleeping in a fault
    wake at once, and pending late stores store at once.
    """
    if state is None:
        options.setdefault("tunnels", DEFAULT_TUNNELS)
        options.setdefault("gre_tunnels", DEFAULT_GRE_TUNNELS)
        state = EmulatorState(**options)
    elif options:
        raise TypeError(f"run() takes state= or its options, not both: {sorted(options)}")
    app = create_app(state, middlewares=middlewares)
    app.router.add_routes(routes)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
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
