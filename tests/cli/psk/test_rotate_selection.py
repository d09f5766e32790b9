"""Which tunnels ``magicwan psk rotate`` takes: names and globs with exclusions, ids from files
and stdin, options anywhere among the positionals, unknown names refused with the way out."""

from __future__ import annotations

from pathlib import Path

import pytest

from magicwan.emulator import Emulator
from tests.support.cli import (
    Answers,
    journalled,
    magicwan,
    summary,
)


@pytest.mark.asyncio
async def test_tunnels_by_name_glob_with_exclusions(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    name = {emu.state.tunnel(emu.account_id, t).name: t for t in emu.tunnel_ids}
    result = await magicwan(
        "psk",
        "rotate",
        "--name",
        "emu_tunnel_0000[1-4]",
        "--exclude",
        "*00002",
        "--exclude",
        name["emu_tunnel_00003"],  # by id too
        "--journal",
        str(tmp_path / "j"),
    )

    assert result.code == 0, result.err
    rotated = {t for t in emu.tunnel_ids if emu.state.tunnel(emu.account_id, t).generation}
    assert rotated == {name["emu_tunnel_00001"], name["emu_tunnel_00004"]}


@pytest.mark.asyncio
async def test_options_go_anywhere_among_the_positionals(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    a, b = emu.tunnel_ids[:2]
    result = await magicwan(
        "psk",
        "rotate",
        emu.account_id,
        "--journal",
        str(tmp_path / "j"),
        a,
        "--concurrency",
        "2",
        b,
    )
    assert result.code == 0, result.err
    rotated = {t for t in emu.tunnel_ids if emu.state.tunnel(emu.account_id, t).generation}
    assert rotated == {a, b}


@pytest.mark.asyncio
async def test_names_and_unknown_ids_are_refused_with_the_way_out(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    by_name = await magicwan(
        "psk", "rotate", emu.account_id, "emu_tunnel_00001", "--journal", str(tmp_path / "j")
    )
    unknown = await magicwan(
        "psk", "rotate", emu.account_id, "f" * 32, "--journal", str(tmp_path / "k")
    )
    no_match = await magicwan("psk", "rotate", "--name", "nope*", "--journal", str(tmp_path / "l"))

    assert by_name.code == 2
    assert "tunnels are given by id" in by_name.err
    assert "--name GLOB" in by_name.err
    assert unknown.code == 2
    assert f"not IPsec tunnels of account {emu.account_id}: {'f' * 32}" in unknown.err
    assert "magicwan tunnels list" in unknown.err
    assert no_match.code == 2
    assert "no tunnel selected" in no_match.err
    assert emu.state.requests.by_route["psk_generate"] == 0


@pytest.mark.asyncio
async def test_ids_from_files_and_stdin(env: tuple[Emulator, Answers], tmp_path: Path) -> None:
    emu, _ = env
    ids = emu.tunnel_ids
    listing = tmp_path / "ids.txt"
    listing.write_text(f"# tunnels of site A\n{ids[1]}\n\n  {ids[2]}  # the spare\n{ids[0]}\n")
    journal = tmp_path / "journal.jsonl"

    result = await magicwan(
        "psk",
        "rotate",
        emu.account_id,
        ids[0],
        "--from-file",
        str(listing),
        "--from-file",
        "-",
        "--journal",
        str(journal),
        stdin=f"{ids[3]}\n",
    )

    assert result.code == 0, result.err
    assert summary(result.err)["rotated"] == "4"  # ids[0] twice: rotated once
    assert sorted(journalled(journal, emu.account_id)) == sorted(ids[:4])
    assert emu.state.tunnel(emu.account_id, ids[4]).generation == 0

    bad = tmp_path / "bad.txt"
    bad.write_text(f"{ids[0]}\n../../etc\n")
    refused = await magicwan("psk", "rotate", "--from-file", str(bad), "--journal", "x")
    assert refused.code == 2
    assert f"{bad}, line 2: tunnel id may hold only ASCII letters and digits" in refused.err
