"""``magicwan tunnels list`` (``magicwan.cli.tunnels``), in-process against the emulator."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from magicwan import cli
from magicwan.emulator import Emulator
from tests.support.cli import Answers, cli_emulator, json_lines, magicwan

HOSTILE = "\x1b[31mred\x1b]0;owned\x07\rover"


@pytest_asyncio.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Emulator, Answers]]:
    async with cli_emulator(monkeypatch, tunnels=3, gre_tunnels=2) as pair:
        yield pair


@pytest.mark.asyncio
async def test_the_table_lists_ipsec_and_gre_tunnels_by_id_and_name(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    result = await magicwan("tunnels", "list")

    assert result.code == 0, result.err
    header, *rows = result.out.splitlines()
    assert header.split() == [
        "TYPE",
        "ID",
        "NAME",
        "CUSTOMER",
        "ENDPOINT",
        "CLOUDFLARE",
        "ENDPOINT",
        "PSK",
        "GENERATED",
    ]
    kinds = [row.split()[0] for row in rows]
    assert kinds == ["ipsec"] * 3 + ["gre"] * 2
    for tunnel_id in emu.tunnel_ids:
        name = emu.state.tunnel(emu.account_id, tunnel_id).name
        assert any(row.split()[1:3] == [tunnel_id, name] for row in rows)
    for tunnel_id in emu.gre_tunnel_ids:
        assert any(row.split()[1] == tunnel_id for row in rows)
    assert "3 IPsec and 2 GRE tunnel(s)" in result.err


@pytest.mark.asyncio
async def test_json_lines_with_the_psk_time_after_a_rotation(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    assert (await magicwan("psk", "generate", emu.tunnel_ids[0], "--show-psk")).code == 0
    result = await magicwan("tunnels", "list", "--json", "--type", "ipsec")

    lines = json_lines(result.out)
    assert [line["id"] for line in lines] == emu.tunnel_ids
    first = lines[0]
    assert first["type"] == "ipsec"
    assert first["psk_last_generated_on"].startswith("20")
    assert first["ipsec_id"] == f"{emu.tunnel_ids[0]}.{emu.account_id}.ipsec.cloudflare.com"
    assert lines[1]["psk_last_generated_on"] is None
    assert "psk" not in first

    gre = json_lines((await magicwan("tunnels", "list", "--json", "--type", "gre")).out)
    assert [(line["type"], line["id"], line["mtu"]) for line in gre] == [
        ("gre", t, 1476) for t in emu.gre_tunnel_ids
    ]


@pytest.mark.asyncio
async def test_names_from_the_server_are_escaped_in_the_table_and_exact_in_json(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    evil = emu.state.add_tunnel(name="evil" + HOSTILE)
    table = await magicwan("tunnels", "list", "--name", "evil*")
    as_json = await magicwan("tunnels", "list", "--name", "evil*", "--json")

    assert table.code == 0
    for raw in ("\x1b", "\x07", "\r"):
        assert raw not in table.out + table.err + as_json.out
    [row] = table.out.splitlines()[1:]
    assert row.split()[1:3] == [evil.id, "evil\\x1b[31mred\\x1b]0;owned\\x07\\rover"]
    [line] = json_lines(as_json.out)
    assert line["name"] == "evil" + HOSTILE


@pytest.mark.asyncio
async def test_a_wrong_token_or_account_exits_3_with_a_hint(
    env: tuple[Emulator, Answers], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, answers = env
    wrong_account = await magicwan("tunnels", "list", "f" * 32)
    answers.add("ipsec_tunnels", status=404, code=7000, message="No route for that URI")
    wrong_route = await magicwan("tunnels", "list")
    answers.clear()
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "nope")
    wrong_token = await magicwan("tunnels", "list")

    assert wrong_account.code == 3
    assert "hint: Cloudflare does not know this account" in wrong_account.err
    assert wrong_route.code == 3
    assert "hint: no such API route: check --base-url" in wrong_route.err
    assert wrong_token.code == 3
    assert "hint: Cloudflare did not accept the credentials" in wrong_token.err
    assert "nope" not in wrong_token.err


@pytest.mark.asyncio
async def test_a_closed_stdout_ends_the_listing_quietly(env: tuple[Emulator, Answers]) -> None:
    read, write = os.pipe()
    os.close(read)
    err = io.StringIO()
    with os.fdopen(write, "w") as out:
        code = await cli.amain(["tunnels", "list"], stdout=out, stderr=err)
    assert code == 0
    assert err.getvalue() == ""


def _age(emu: Emulator, tunnel_id: str, days: float) -> None:
    """Make ``tunnel_id``'s PSK ``days`` old, as the list reports it."""
    tunnel = emu.state.tunnel(emu.account_id, tunnel_id)
    tunnel.last_generated_on = datetime.now(UTC) - timedelta(days=days)
    tunnel.changed()


@pytest.mark.asyncio
async def test_older_than_lists_old_and_never_rotated_ipsec_tunnels_only(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    old, fresh, never = emu.tunnel_ids
    _age(emu, old, 91)
    _age(emu, fresh, 1)

    as_json = await magicwan("tunnels", "list", "--older-than", "90d", "--json")
    table = await magicwan("tunnels", "list", "--older-than", "2160h")
    gre = await magicwan("tunnels", "list", "--older-than", "90d", "--type", "gre")
    bad = await magicwan("tunnels", "list", "--older-than", "3 months")

    assert as_json.code == 0, as_json.err
    assert [(line["type"], line["id"]) for line in json_lines(as_json.out)] == [
        ("ipsec", old),
        ("ipsec", never),
    ]
    assert [row.split()[1] for row in table.out.splitlines()[1:]] == [old, never]
    assert "2 IPsec and 0 GRE tunnel(s)" in table.err
    assert gre.code == 2
    assert "GRE tunnels have no PSK" in gre.err
    assert bad.code == 2
    assert "argument --older-than: DURATION must be a whole number and a unit" in bad.err
