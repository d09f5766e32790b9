"""``magicwan psk audit`` (``magicwan.cli.audit``), in-process against the emulator."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from magicwan.cli.audit import duration_text, format_age
from magicwan.emulator import Emulator
from tests.support.cli import Answers, cli_emulator, json_lines, magicwan

DAY = 86400


@pytest_asyncio.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Emulator, Answers]]:
    async with cli_emulator(monkeypatch, tunnels=3) as pair:
        yield pair


def _age(emu: Emulator, tunnel_id: str, days: float) -> None:
    tunnel = emu.state.tunnel(emu.account_id, tunnel_id)
    tunnel.last_generated_on = datetime.now(UTC) - timedelta(days=days)
    tunnel.changed()


def _requests(emu: Emulator) -> dict[str, int]:
    return dict(emu.state.requests.by_route)


@pytest.mark.asyncio
async def test_all_young_exits_0_and_sends_only_the_tunnel_list(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    for days, tunnel in zip((10, 20, 30), emu.tunnel_ids, strict=True):
        _age(emu, tunnel, days)

    result = await magicwan("psk", "audit", "--max-age", "90d")

    assert result.code == 0, result.err
    header, *rows = result.out.splitlines()
    assert header.split() == ["ID", "NAME", "PSK", "GENERATED", "AGE", "POLICY"]
    # Oldest first.
    assert [row.split()[0] for row in rows] == list(reversed(emu.tunnel_ids))
    assert all(row.split()[-1] == "ok" for row in rows)
    assert rows[0].split()[-2] == "30d00h"
    assert "all 3 tunnel(s)" in result.err
    assert "younger than 90d (oldest: 30d00h)" in result.err
    assert _requests(emu) == {"list_ipsec_tunnels": 1}
    assert all(emu.state.tunnel(emu.account_id, t).generation == 0 for t in emu.tunnel_ids)


@pytest.mark.asyncio
async def test_one_old_and_one_never_generated_exit_1_with_json_lines_and_a_summary(
    env: tuple[Emulator, Answers],
) -> None:
    emu, _ = env
    old, young, never = emu.tunnel_ids
    _age(emu, old, 91)
    _age(emu, young, 1)

    result = await magicwan("psk", "audit", "--max-age", "90d", "--json")
    table = await magicwan("psk", "audit", "--max-age", "2160h")

    assert result.code == 1
    *tunnels, summary = json_lines(result.out)
    assert [(t["tunnel_id"], t["too_old"]) for t in tunnels] == [
        (never, True),
        (old, True),
        (young, False),
    ]
    assert tunnels[0]["age_seconds"] is None
    assert tunnels[0]["last_generated_on"] is None
    assert 91 * DAY <= tunnels[1]["age_seconds"] < 91 * DAY + 60
    assert all(t["event"] == "tunnel" and t["account_id"] == emu.account_id for t in tunnels)
    assert summary["event"] == "summary"
    assert (summary["tunnels"], summary["too_old"], summary["never_generated"]) == (3, 2, 1)
    assert summary["max_age_seconds"] == 90 * DAY
    assert summary["oldest_age_seconds"] is None  # one was never generated
    assert "2 of 3 tunnel(s)" in result.err
    assert "(1 never generated)" in result.err
    assert "psk rotate --older-than 90d" in result.err
    assert table.code == 1
    rows = table.out.splitlines()[1:]
    assert [row.split()[-4:] for row in rows[:2]] == [
        ["never", "OLDER", "THAN", "90d"],  # 2160h is shown in its largest exact unit
        ["91d00h", "OLDER", "THAN", "90d"],
    ]
    assert rows[2].split()[-2:] == ["1d00h", "ok"]


@pytest.mark.asyncio
async def test_metrics_file_has_one_age_per_tunnel_and_the_oldest(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    for days, tunnel in zip((5, 50, 95), emu.tunnel_ids, strict=True):
        _age(emu, tunnel, days)
    path = tmp_path / "magicwan_audit.prom"

    result = await magicwan("psk", "audit", "--max-age", "90d", "--metrics-file", str(path))

    assert result.code == 1
    ages = {}
    oldest = None
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            if sample.name == "magicwan_psk_age_seconds":
                assert (
                    sample.labels["name"]
                    == emu.state.tunnel(emu.account_id, sample.labels["tunnel_id"]).name
                )
                ages[sample.labels["tunnel_id"]] = sample.value
            elif sample.name == "magicwan_psk_oldest_age_seconds":
                oldest = sample.value
    assert set(ages) == set(emu.tunnel_ids)
    assert 95 * DAY <= ages[emu.tunnel_ids[2]] < 95 * DAY + 60
    assert oldest == max(ages.values())
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.asyncio
async def test_a_bad_metrics_path_or_max_age_is_refused_before_anything_is_sent(
    env: tuple[Emulator, Answers], tmp_path: Path
) -> None:
    emu, _ = env
    missing = await magicwan(
        "psk", "audit", "--max-age", "90d", "--metrics-file", str(tmp_path / "no" / "m.prom")
    )
    no_policy = await magicwan("psk", "audit")
    bad_policy = await magicwan("psk", "audit", "--max-age", "3mo")

    assert missing.code == 2
    assert "does not exist" in missing.err
    assert no_policy.code == 2
    assert "--max-age" in no_policy.err
    assert bad_policy.code == 2
    assert "DURATION must be" in bad_policy.err
    assert _requests(emu) == {}


@pytest.mark.asyncio
async def test_an_account_without_tunnels_passes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with cli_emulator(monkeypatch, tunnels=0):
        result = await magicwan("psk", "audit", "--max-age", "1d", "--json")
    assert result.code == 0, result.err
    [summary] = json_lines(result.out)
    assert (summary["tunnels"], summary["too_old"]) == (0, 0)


def test_format_age_and_duration_text() -> None:
    assert format_age(None) == "never"
    assert format_age(timedelta(days=91, hours=4, minutes=59)) == "91d04h"
    assert format_age(timedelta(hours=3, minutes=12)) == "3h12m"
    assert format_age(timedelta(minutes=5, seconds=7)) == "5m07s"
    assert format_age(timedelta(seconds=45.9)) == "45s"
    assert duration_text(timedelta(days=90)) == "90d"
    assert duration_text(timedelta(hours=36)) == "36h"
    assert duration_text(timedelta(minutes=90)) == "90m"
    assert duration_text(timedelta(seconds=61)) == "61s"
