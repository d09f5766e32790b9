"""``examples/rotate_to_strongswan.py`` and its delivery program
``examples/swanctl_psk_hook.py``, against the emulator and without charon: the swanctl files
hold the PSKs the emulator holds, and a stand-in ``swanctl`` sees what would be run."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from magicwan import new_psk
from magicwan.emulator import Emulator, run
from magicwan.journal import read_journal
from tests.support.examples import (
    EXAMPLES,
    assert_only_ids,
    clean_environment,
    read_secret,
    run_example,
)


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with run(tunnels=20, rate_limit=None) as emu:
        yield emu


_SECRET = re.compile(
    r'ike-magicwan-(?P<tunnel>[0-9a-f]{32}) \{\n\s+id-router = "(?P<router>[^"]+)"\n'
    r'\s+id-cloudflare = "(?P<cloudflare>[^"]+)"\n\s+secret = 0s(?P<secret>[A-Za-z0-9+/=]+)\n'
)


def swanctl_secret(path: Path) -> dict[str, str]:
    """The one secret of a file the hook wrote: tunnel, identities, the PSK decoded."""
    assert path.stat().st_mode & 0o777 == 0o600, path
    match = _SECRET.search(path.read_text())
    assert match is not None, path.read_text()
    found = match.groupdict()
    found["secret"] = base64.b64decode(found["secret"]).decode()
    return found


def fake_swanctl(tmp_path: Path, *, failing: str | None = None) -> tuple[Path, Path]:
    """A ``swanctl`` that logs its arguments, and fails (exit 2) when given ``failing``."""
    log = tmp_path / "swanctl.log"
    program = tmp_path / "swanctl"
    program.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"with open({str(log)!r}, 'a') as log:\n"
        "    log.write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"if {failing!r} in sys.argv[1:]:\n"
        "    print(\"connecting to 'unix:///var/run/charon.vici' failed\", file=sys.stderr)\n"
        "    sys.exit(2)\n"
    )
    program.chmod(0o755)
    return program, log


def arguments(tmp_path: Path, *more: str) -> tuple[str, ...]:
    (tmp_path / "conf.d").mkdir(exist_ok=True)
    return ("--journal", "rotation.jsonl", "--keep", "kept", "--conf-dir", "conf.d", *more)


@pytest.mark.asyncio
async def test_every_psk_lands_in_a_swanctl_secret_and_swanctl_loads_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    swanctl, log = fake_swanctl(tmp_path)
    account, ids = emulator.account_id, emulator.tunnel_ids

    done = await run_example(
        "rotate_to_strongswan.py",
        *arguments(tmp_path, "--swanctl", str(swanctl)),
        emulator=emulator,
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.output
    assert "checked: all 20 deliveries can be made" in done.stdout
    assert "20 of 20 tunnels rotated into strongSwan" in done.stdout
    records = read_journal(tmp_path / "rotation.jsonl")
    for tunnel_id in ids:
        secret = swanctl_secret(tmp_path / "conf.d" / f"magicwan-{tunnel_id}.conf")
        tunnel = emulator.state.tunnel(account, tunnel_id)
        assert secret["secret"] == emulator.state.current_psk(account, tunnel_id)
        assert secret["router"] == records[(account, tunnel_id)].ipsec_id
        assert secret["cloudflare"] == tunnel.cloudflare_endpoint
        assert secret["secret"] not in done.output
    # One check per tunnel (charon answers), then one load per delivery.
    assert log.read_text().splitlines() == ["--stats"] * 20 + ["--load-creds --noprompt"] * 20
    assert_only_ids(done.output)


@pytest.mark.asyncio
async def test_charon_down_changes_nothing(emulator: Emulator, tmp_path: Path) -> None:
    swanctl, log = fake_swanctl(tmp_path, failing="--stats")
    account, ids = emulator.account_id, emulator.tunnel_ids
    before = {t: emulator.state.current_psk(account, t) for t in ids}

    done = await run_example(
        "rotate_to_strongswan.py",
        *arguments(tmp_path, "--swanctl", str(swanctl)),
        emulator=emulator,
        cwd=tmp_path,
    )

    assert done.returncode == 1
    assert "20 of 20 deliveries cannot be made: nothing changed" in done.stdout
    assert "charon.vici' failed" in done.stderr
    assert {t: emulator.state.current_psk(account, t) for t in ids} == before
    assert list((tmp_path / "conf.d").iterdir()) == []
    assert "--load-creds --noprompt" not in log.read_text()


@pytest.mark.asyncio
async def test_psks_charon_refused_are_kept_and_the_rotation_halts(
    emulator: Emulator, tmp_path: Path
) -> None:
    swanctl, _ = fake_swanctl(tmp_path, failing="--load-creds")
    account = emulator.account_id

    done = await run_example(
        "rotate_to_strongswan.py",
        *arguments(tmp_path, "--swanctl", str(swanctl)),
        emulator=emulator,
        cwd=tmp_path,
    )

    assert done.returncode == 1
    assert "0 of 20 tunnels rotated into strongSwan" in done.stdout
    kept = sorted((tmp_path / "kept").iterdir())
    assert len(kept) == 5  # halt_after=5; the rollout window kept it to one at a time
    for path in kept:
        tunnel_id = path.name.removesuffix(".psk")
        assert f"undelivered {tunnel_id}" in done.stdout
        assert read_secret(path) == emulator.state.current_psk(account, tunnel_id)
    assert done.stdout.count("not_attempted ") == 15
    assert_only_ids(done.output)


@pytest.mark.asyncio
async def test_without_swanctl_the_files_alone_are_written(
    emulator: Emulator, tmp_path: Path
) -> None:
    done = await run_example(
        "rotate_to_strongswan.py",
        *arguments(tmp_path, "--no-load"),
        emulator=emulator,
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.output
    assert len(list((tmp_path / "conf.d").glob("magicwan-*.conf"))) == 20


def _hook(tmp_path: Path, env: dict[str, str], psk: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our interpreter, our example
        [
            sys.executable,
            str(EXAMPLES / "swanctl_psk_hook.py"),
            *("--conf-dir", str(tmp_path), "--no-load"),
        ],
        input=psk + "\n",
        capture_output=True,
        text=True,
        env={**clean_environment(), **env},
        timeout=30,
        check=False,
    )


FACTS = {
    "MAGICWAN_TUNNEL_ID": "0123456789abcdef0123456789abcdef",
    "MAGICWAN_IPSEC_ID": "router.example.net",
    "MAGICWAN_CLOUDFLARE_ENDPOINT": "203.0.113.1",
}


def test_the_hook_writes_one_secret_and_again_the_same(tmp_path: Path) -> None:
    psk = new_psk()
    for _ in range(2):  # a retry, a resumed run: the same file again
        done = _hook(tmp_path, FACTS, psk)
        assert done.returncode == 0, done.stderr
    assert [path.name for path in tmp_path.iterdir()] == [
        "magicwan-0123456789abcdef0123456789abcdef.conf"
    ]
    secret = swanctl_secret(next(tmp_path.iterdir()))
    assert secret == {
        "tunnel": FACTS["MAGICWAN_TUNNEL_ID"],
        "router": "router.example.net",
        "cloudflare": "203.0.113.1",
        "secret": psk,
    }


@pytest.mark.parametrize(
    "change",
    [{"MAGICWAN_IPSEC_ID": ""}, {"MAGICWAN_IPSEC_ID": 'a"b'}, {"MAGICWAN_TUNNEL_ID": "../x"}],
)
def test_the_hook_refuses_facts_it_cannot_use_permanently(
    tmp_path: Path, change: dict[str, str]
) -> None:
    done = _hook(tmp_path, {**FACTS, **change}, new_psk())

    assert done.returncode == 78  # EX_CONFIG: magicwan does not retry it
    assert list(tmp_path.iterdir()) == []


def test_the_hook_under_check_changes_nothing(tmp_path: Path) -> None:
    done = _hook(tmp_path, {**FACTS, "MAGICWAN_CHECK": "1"})

    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []
