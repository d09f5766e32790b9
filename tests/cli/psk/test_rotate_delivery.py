"""``magicwan psk rotate --deliver-exec`` and ``--deliver-strongswan``: each new PSK handed to the
router, halting on a failing deliverer, exit 5 for what is live but undelivered."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from magicwan.emulator import Emulator
from tests.support.cli import (
    TUNNELS,
    Answers,
    assert_no_psk,
    edge_psk,
    json_lines,
    magicwan,
    summary,
)

DELIVER = (
    f'{sys.executable} -c "import os, sys, pathlib; '
    "pathlib.Path(sys.argv[1], os.environ['MAGICWAN_TUNNEL_ID']).write_text("
    "sys.stdin.read().strip() + ' ' + os.environ['MAGICWAN_TUNNEL_NAME'])\""
)


@pytest.mark.asyncio
async def test_deliver_exec_hands_each_psk_to_the_program_on_stdin(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    out = tmp_path / "router"
    out.mkdir()
    result = await magicwan(
        "psk",
        "rotate",
        "--all",
        "--journal",
        str(tmp_path / "j"),
        "--deliver-exec",
        f"{DELIVER} {out}",
        "--json",
    )

    assert result.code == 0, result.err
    for tunnel in emu.tunnel_ids:
        name = emu.state.tunnel(emu.account_id, tunnel).name
        assert (out / tunnel).read_text() == f"{edge_psk(emu, tunnel)} {name}"
    lines = json_lines(result.out)
    assert all(line["delivered"] is True for line in lines[:-1])
    assert (lines[-1]["delivered"], lines[-1]["undelivered"]) == (TUNNELS, 0)
    assert summary(result.err)["delivered"] == str(TUNNELS)
    assert_no_psk(result.err, emu)


@pytest.mark.asyncio
async def test_a_failing_deliverer_halts_and_exits_5(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    _, _ = env
    result = await magicwan(
        "psk",
        "rotate",
        "--all",
        "--journal",
        str(tmp_path / "j"),
        "--deliver-exec",
        "false",
        "--deliver-retries",
        "0",
        "--halt-after",
        "2",
        "--concurrency",
        "1",
    )

    assert result.code == 5
    rows = summary(result.err)
    undelivered = int(rows["undelivered"])
    assert 2 <= undelivered < TUNNELS  # halted after 2 (one more may be past its request)
    assert rows["delivered"] == "0"
    assert rows["delivery not attempted"] == str(TUNNELS - undelivered)
    assert rows["not attempted"] == str(TUNNELS - undelivered)
    assert "hint: the --deliver-exec program failed" in result.err
    assert "'false' exited with status 1" in result.err
    assert "to finish:" in result.err  # a rerun with --resume delivers again


@pytest.mark.asyncio
async def test_undelivered_wins_over_failed(env: tuple[Emulator, Answers], tmp_path: Path) -> None:
    emu, answers = env
    answers.add("psk_generate", status=500, code=10001, message="x", tunnel=emu.tunnel_ids[0])
    result = await magicwan(
        "psk",
        "rotate",
        emu.account_id,
        emu.tunnel_ids[0],
        emu.tunnel_ids[1],
        "--journal",
        str(tmp_path / "j"),
        "--deliver-exec",
        "false",
        "--deliver-retries",
        "0",
        "--max-retries",
        "0",
    )
    assert result.code == 5
    rows = summary(result.err)
    assert (rows["failed"], rows["undelivered"]) == ("1", "1")


@pytest.mark.asyncio
async def test_deliver_strongswan_to_a_missing_socket_is_undelivered_with_a_hint(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    pytest.importorskip("vici", reason="the strongswan extra is not installed")
    result = await magicwan(
        "psk",
        "rotate",
        emu.account_id,
        emu.tunnel_ids[0],
        "--journal",
        str(tmp_path / "j"),
        "--deliver-strongswan",
        str(tmp_path / "no-charon.vici"),
        "--reauth",
        "--deliver-retries",
        "0",
    )
    assert result.code == 5
    assert "is charon running" in result.err
    assert summary(result.err)["undelivered"] == "1"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--reauth"], "--reauth applies to --deliver-strongswan"),
        (["--deliver-timeout", "3"], "need a --deliver-... option"),
        (["--deliver-exec", "x", "--validate-only"], "delivers nothing"),
        (["--deliver-exec", "'unclosed"], "--deliver-exec: No closing quotation"),
        (["--deliver-exec", "x", "--deliver-strongswan"], "not allowed with argument"),
    ],
)
async def test_delivery_option_errors(
    env: tuple[Emulator, Answers], argv: list[str], message: str
) -> None:
    emu, _ = env
    result = await magicwan("psk", "rotate", "--all", "--journal", "j", *argv)
    assert result.code == 2
    assert message in result.err
    assert emu.state.requests.total == 0


#: A deliverer that fails, naming its tunnel (as a router's error would) in its stderr.
REFUSE_NAMING_THE_TUNNEL = (
    f'{sys.executable} -c "import os, sys; '
    "sys.exit('router refused the key for ' + os.environ['MAGICWAN_TUNNEL_ID'])\""
)


@pytest.mark.asyncio
async def test_a_failure_shared_by_several_tunnels_names_whose_text_is_shown(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    """One error text stands for a group whose members' texts differ only by their own
    tunnel id: it says whose it is, so it is never shown as another tunnel's."""
    emu, _ = env
    result = await magicwan(
        "psk",
        "rotate",
        "--all",
        "--journal",
        str(tmp_path / "j"),
        *("--deliver-exec", REFUSE_NAMING_THE_TUNNEL),
        *("--deliver-retries", "0", "--deliver-group-by", "customer_endpoint"),
        *("--concurrency", "1", "--halt-after", "3", "--progress", "lines"),
    )

    assert result.code == 5, result.err
    lines = [line for line in result.err.splitlines() if line.startswith("undelivered ")]
    assert len(lines) == 3
    first = lines[0].split()[1]
    assert f"router refused the key for {first}" in lines[0]
    for line in lines[1:]:
        tunnel = line.split()[1]
        assert f"DeliveryError (as above for {first}, with this tunnel's id)" in line, line
        assert tunnel != first
    at = result.err.splitlines().index("failures:")
    group = result.err.splitlines()[at + 1 : at + 3]
    assert group[0].startswith("  3 tunnels (undelivered): DeliveryError: delivery failed")
    assert f"router refused the key for {first}" in group[0]
    assert group[1] == f"    the text of {first}; the others' name their own tunnel"
    assert "after 1 try:" in result.err
    assert_no_psk(result.err, emu)
