"""``examples/tunnel_lifecycle.py``: two tunnels created, updated, rotated and deleted
against the emulator; every PSK the emulator held until the delete is the one it kept."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from magicwan.emulator import Emulator, run
from magicwan.journal import read_journal
from tests.support.examples import assert_only_ids, read_secret, run_example


@pytest.mark.asyncio
async def test_tunnel_lifecycle_keeps_every_psk_the_tunnels_held(tmp_path: Path) -> None:
    held_at_delete: dict[str, str | None] = {}
    link: list[Emulator] = []

    @web.middleware
    async def witness(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # The deleted tunnel's PSK goes with it: see what it held just before.
        if request.method == "DELETE":
            emu, tunnel_id = link[0], request.path.rstrip("/").rsplit("/", 1)[1]
            tunnel = emu.state.tunnel(emu.account_id, tunnel_id)
            held_at_delete[str(tunnel.name)] = emu.state.current_psk(emu.account_id, tunnel_id)
        return await handler(request)

    async with run(tunnels=1, gre_tunnels=0, rate_limit=None, middlewares=[witness]) as emu:
        link.append(emu)
        done = await run_example(
            "tunnel_lifecycle.py",
            *("--journal", "lifecycle.jsonl", "--keep", "kept"),
            emulator=emu,
            cwd=tmp_path,
        )

        assert done.returncode == 0, done.output
        out = done.stdout
        assert "created site_a" in out
        assert "Cloudflare generated its PSK" in out
        assert "updated site_a: ISP B" in out
        assert "listed: site_a, site_b" in out
        assert "rotated site_a: delivered" in out
        assert "rotated site_b: delivered" in out
        assert "deleted site_a" in out
        assert "deleted site_b" in out
        assert "1 tunnel(s) left" in out
        assert len(emu.tunnel_ids) == 1

    kept = {name: read_secret(tmp_path / "kept" / f"{name}.psk") for name in ("site_a", "site_b")}
    assert held_at_delete == kept
    journalled = {record.psk for record in read_journal(tmp_path / "lifecycle.jsonl").values()}
    assert set(kept.values()) <= journalled
    assert sorted(path.name for path in (tmp_path / "kept").iterdir()) == [
        "site_a.psk",
        "site_b.psk",
    ]
    for psk in kept.values():
        assert psk not in done.output
    assert_only_ids(done.output)
