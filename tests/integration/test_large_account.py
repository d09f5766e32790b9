"""An account of 10,000 tunnels (what the README sells and the benchmarks use): its tunnel
list (~8 MB) is read whole, by the SDK and by the command line."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from magicwan import MagicWAN
from magicwan._http import MAX_RESPONSE_BYTES  # private: the cap a large account stays under
from magicwan.emulator import Emulator
from tests.support.cli import Answers, cli_emulator, json_lines, magicwan

TUNNELS = 10_000


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env() -> AsyncIterator[tuple[Emulator, Answers]]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        async with cli_emulator(monkeypatch, tunnels=TUNNELS) as pair:
            yield pair


@pytest.mark.asyncio(loop_scope="module")
async def test_the_list_of_10000_tunnels_is_larger_than_the_default_cap_and_read_whole(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    async with MagicWAN(api_token=emu.api_token, base_url=emu.base_url) as client:
        reply = await client.tunnels.ipsec.with_reply.list(emu.account_id)

    assert len(reply.value) == TUNNELS
    assert {t.id for t in reply.value} == set(emu.tunnel_ids)
    # Not vacuous: the answer itself is past the cap every other route keeps.
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{emu.base_url}/accounts/{emu.account_id}/magic/ipsec_tunnels",
            headers={"Authorization": f"Bearer {emu.api_token}", "Accept-Encoding": "identity"},
        ) as resp,
    ):
        body = await resp.read()
    assert len(body) > MAX_RESPONSE_BYTES


@pytest.mark.asyncio(loop_scope="module")
async def test_tunnels_list_and_a_dry_run_start_with_10000_tunnels(
    env: tuple[Emulator, Answers], monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, _ = env
    for name, value in emu.env().items():
        monkeypatch.setenv(name, value)

    listed = await magicwan("tunnels", "list", "--type", "ipsec", "--json", "-q")
    dry = await magicwan("psk", "rotate", "--all", "--dry-run", "--json", "-q")

    assert listed.code == 0, listed.err
    assert len(json_lines(listed.out)) == TUNNELS
    assert dry.code == 0, dry.err
    assert emu.state.tunnel(emu.account_id, emu.tunnel_ids[-1]).generation == 0
