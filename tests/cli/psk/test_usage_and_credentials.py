"""The psk commands' usage errors (exit 2 before any request), credentials (missing: 2, wrong:
3; a token or an email and key), the base URL and the account."""

from __future__ import annotations

from pathlib import Path

import pytest

from magicwan.emulator import Emulator
from tests.support.cli import (
    Answers,
    magicwan,
)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["psk", "rotate", "{account}", "bad/id", "--journal", "{journal}"], id="arg"),
        pytest.param(
            ["psk", "rotate", "bad-account", "--all", "--journal", "{journal}"], id="acct"
        ),
        pytest.param(
            ["psk", "rotate", "{account}", "--from-file", "{bad}", "--journal", "{journal}"],
            id="file",
        ),
        pytest.param(["psk", "rotate", "{account}", "--all"], id="no-journal"),
        pytest.param(["psk", "rotate", "{account}", "--journal", "{journal}"], id="no-tunnels"),
        pytest.param(["psk", "generate", "{account}", "x" * 33, "--show-psk"], id="long-id"),
        pytest.param(["psk", "rotate", "{account}", "--all", "--rate-limit", "fast"], id="rate"),
        pytest.param(["psk", "rotate", "{account}", "--all", "--concurrency", "0"], id="conc"),
        pytest.param(
            ["psk", "rotate", "--all", "--name", "x", "--journal", "{journal}"], id="all+name"
        ),
        pytest.param(["psk", "rotate", "--all", "--dry-run", "--validate-only"], id="dry+validate"),
        pytest.param(
            ["psk", "set", "{account}", "{tunnel}", "--psk-stdin", "--journal", "{journal}"],
            id="no-psk",
        ),
    ],
)
async def test_usage_and_input_errors_exit_2_before_any_request(
    env: tuple[Emulator, Answers], tmp_path: Path, argv: list[str]
) -> None:
    emu, _ = env
    bad = tmp_path / "ids.txt"
    bad.write_text(f"{emu.tunnel_ids[0]}\n../../etc\n")
    values = {
        "account": emu.account_id,
        "tunnel": emu.tunnel_ids[0],
        "journal": str(tmp_path / "j.jsonl"),
        "bad": str(bad),
    }
    result = await magicwan(*(arg.format(**values) for arg in argv))

    assert result.code == 2
    assert "error:" in result.err
    assert "Traceback" not in result.err
    assert emu.state.requests.total == 0


@pytest.mark.asyncio
async def test_base_url_flag_wins_over_the_environment(
    env: tuple[Emulator, Answers], monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, _ = env
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", "http://127.0.0.1:9/client/v4")
    result = await magicwan("psk", "rotate", "--all", "--dry-run", "--base-url", emu.base_url)
    assert result.code == 0, result.err
    unreachable = await magicwan("psk", "rotate", "--all", "--dry-run", "--max-retries", "0")
    assert unreachable.code == 3
    assert "hint: Cloudflare could not be reached" in unreachable.err


@pytest.mark.asyncio
async def test_missing_credentials_exit_2_and_wrong_ones_exit_3(
    env: tuple[Emulator, Answers], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, _ = env
    journal = tmp_path / "j.jsonl"
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN")
    missing = await magicwan("psk", "rotate", "--all", "--journal", str(journal))
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "wrong")
    wrong = await magicwan("psk", "rotate", "--all", "--journal", str(tmp_path / "k"))

    assert missing.code == 2
    assert "no credentials: set CLOUDFLARE_API_TOKEN" in missing.err
    assert not journal.exists()
    assert wrong.code == 3
    assert "cannot list the IPsec tunnels" in wrong.err
    assert "hint: Cloudflare did not accept the credentials" in wrong.err
    assert emu.state.total_generations() == 0


@pytest.mark.asyncio
async def test_email_and_key_credentials_work(
    env: tuple[Emulator, Answers], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, _ = env
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN")
    monkeypatch.setenv("CLOUDFLARE_EMAIL", emu.api_email)
    monkeypatch.setenv("CLOUDFLARE_API_KEY", emu.api_key)
    result = await magicwan(
        "psk", "rotate", emu.account_id, emu.tunnel_ids[0], "--journal", str(tmp_path / "j")
    )
    assert result.code == 0, result.err
    assert emu.api_key not in result.out + result.err


@pytest.mark.asyncio
async def test_the_account_comes_from_the_argument_or_the_environment(
    env: tuple[Emulator, Answers], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, _ = env
    monkeypatch.delenv("CLOUDFLARE_ACCOUNT_ID")
    missing = await magicwan("psk", "rotate", "--all", "--journal", str(tmp_path / "j"))
    assert missing.code == 2
    assert "which account? give ACCOUNT or set CLOUDFLARE_ACCOUNT_ID" in missing.err

    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "../x")
    bad = await magicwan("psk", "rotate", "--all", "--journal", str(tmp_path / "j"))
    assert bad.code == 2
    assert "CLOUDFLARE_ACCOUNT_ID may hold only" in bad.err
    given = await magicwan(
        "psk", "rotate", emu.account_id, emu.tunnel_ids[1], "--journal", str(tmp_path / "j2")
    )
    assert given.code == 0, given.err  # ACCOUNT given wins over the environment
    assert emu.state.requests.total == 2  # the list and the one generate
