"""Serving HTTPS with trustme certificates."""

from __future__ import annotations

import ssl

import aiohttp
import pytest
import trustme

from magicwan.emulator import Faults, run
from tests.support.emulator import SUCCESS, generate

pytestmark = pytest.mark.asyncio


async def test_https_and_a_reset_over_tls() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async with run(tunnels=1, ssl_context=server_context) as emu:
        assert emu.base_url.startswith("https://127.0.0.1:")
        connector = aiohttp.TCPConnector(ssl=client_context)
        async with aiohttp.ClientSession(connector=connector) as session:
            status, _, body = await generate(session, emu)
            assert status == 200
            SUCCESS.validate(body)
            emu.set_faults(Faults(reset_after_store=1.0))
            with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
                await generate(session, emu)
        assert emu.state.tunnel(emu.account_id, emu.tunnel_ids[0]).generation == 2
