"""One client never runs two rotations of one tunnel at once: the second is refused before
it sends anything, and a rotation's tunnels are free again once it ends, however it ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from magicwan import InvalidInputError, MagicWAN
from magicwan.emulator import run
from magicwan.rotation import LiveTunnels


def test_live_tunnels_are_held_all_or_nothing_and_let_go() -> None:
    a, b, c = ("a" * 32, "b" * 32, "c" * 32)
    live = LiveTunnels()
    live.hold("acc", [a, b])
    with pytest.raises(InvalidInputError, match=rf"1 of the 2 selected tunnels .* \({b}\)"):
        live.hold("ACC", [b.upper(), c])
    assert len(live) == 2  # the refused hold took nothing, not even c
    live.hold("other", [a])  # another account's tunnel of the same id is another tunnel
    live.let_go("acc", [a, b, "never-held"])
    live.hold("acc", [b, c])
    assert len(live) == 3


def test_a_held_tunnel_given_as_a_psk_is_never_shown() -> None:
    psk = "Kqx6hZ3mPq9sVw2nLt8rYb4cXd7fGj5a"
    live = LiveTunnels()
    live.hold("acc", [psk])
    with pytest.raises(InvalidInputError) as refused:
        live.hold("acc", [psk])
    assert psk.lower() not in str(refused.value).lower()


@pytest.mark.asyncio
async def test_a_second_rotation_of_a_tunnel_is_refused_before_any_request(
    tmp_path: Path,
) -> None:
    async with run(tunnels=2, rate_limit=None) as emu:
        first_tunnel, other = emu.tunnel_ids
        async with MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={}) as client:
            psk = client.tunnels.ipsec.psk
            first = psk.rotate(emu.account_id, [first_tunnel], journal=tmp_path / "a.jsonl")
            async with first:
                second = psk.rotate(
                    emu.account_id, [other, first_tunnel], journal=tmp_path / "b.jsonl"
                )
                with pytest.raises(InvalidInputError, match="another rotation of this client"):
                    async with second:
                        pass
                assert emu.state.history(emu.account_id, other) == []
                outcomes = [outcome async for outcome in first]
            assert [outcome.ok for outcome in outcomes] == [True]
            # Ended: its tunnel is free again, and the refused one held nothing.
            again = psk.rotate(emu.account_id, emu.tunnel_ids, journal=tmp_path / "c.jsonl")
            async with again:
                assert [o.ok async for o in again] == [True, True]


@pytest.mark.asyncio
async def test_a_rotation_cut_short_or_refused_by_its_journal_frees_its_tunnels(
    tmp_path: Path,
) -> None:
    async with (
        run(tunnels=1, rate_limit=None) as emu,
        MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={}) as client,
    ):
        psk = client.tunnels.ipsec.psk
        cut = psk.rotate(emu.account_id, emu.tunnel_ids, journal=tmp_path / "cut.jsonl")
        async with cut:
            pass  # left before taking anything: cut, its work drained
        assert await _rotate_all(client, emu.account_id, emu.tunnel_ids, tmp_path / "a") == [True]
        refused = psk.rotate(emu.account_id, emu.tunnel_ids, journal=tmp_path / "a.jsonl")
        with pytest.raises(InvalidInputError, match="already records"):
            async with refused:  # held, then refused by its journal
                pass
        assert await _rotate_all(client, emu.account_id, emu.tunnel_ids, tmp_path / "b") == [True]


async def _rotate_all(
    client: MagicWAN, account_id: str, tunnels: list[str], journal: Path
) -> list[bool]:
    rotation = client.tunnels.ipsec.psk.rotate(
        account_id, tunnels, journal=journal.with_suffix(".jsonl")
    )
    async with rotation:
        return [outcome.ok async for outcome in rotation]
