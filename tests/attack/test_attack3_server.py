"""Third review: a hostile or broken server. Small aiohttp servers on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from magicwan.rotation import Validated
from tests.support.constants import ACCOUNT, TUNNEL
from tests.support.tiny_server import (
    THEIRS,
    applies_its_own_psk,
    client_of,
    tiny_server,
)

pytestmark = pytest.mark.asyncio


async def test_validate_only_set_answered_with_another_psk_keeps_the_psk_received(
    tmp_path: Path,
) -> None:
    # rotate(method="set", validate_only=True, journal=...). The server answers "applied"
    # with a PSK other than the one sent. Without validate_only the second review's fix
    # keeps Cloudflare's PSK (journalled, doubtful, in the failure). Under validate_only
    # the mismatch check is skipped (`not s.validate_only and ...`) and the Validated
    # outcome is built with `attrs.evolve(model, psk=psks[work.id])`: the PSK the server
    # says the tunnel now holds is overwritten by the one sent. It is in no outcome and
    # no journal line (only the sent PSK's intent is journalled). SECURITY.md "Validation
    # that was not": a server that applies anyway must not cost the PSK; README: "never
    # drops a PSK it received". Here the tunnel runs on a PSK nobody has.
    path = tmp_path / "j.jsonl"
    async with tiny_server(applies_its_own_psk) as base, client_of(base) as client:
        rotation = client.tunnels.ipsec.psk.rotate(
            ACCOUNT, [TUNNEL], method="set", validate_only=True, journal=path
        )
        async with rotation:
            [outcome] = [o async for o in rotation]
    journalled = path.read_text() if path.exists() else ""
    carried = outcome.result.psk if outcome.result is not None else None
    assert carried == THEIRS or THEIRS in journalled, (
        f"{type(outcome).__name__} carries the PSK sent; the PSK the server says it applied "
        "is in no outcome and no journal line"
    )
    assert not isinstance(outcome, Validated), "'validated' although the server applied a PSK"
