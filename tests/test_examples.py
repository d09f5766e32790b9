"""Every program in examples/ runs against the emulator, does what it says (the emulator's
state shows it), and never prints a PSK. ``tests/test_docs.py`` type-checks each of them
under ``mypy --strict``, and CI runs ``mypy --strict examples``.

Each example runs as a subprocess of the test's event loop (which serves the emulator),
with the emulator's ``CLOUDFLARE_*`` variables as its only credentials.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import pytest_asyncio

from magicwan.emulator import Emulator, run
from magicwan.journal import read_journal

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# A PSK is 32 letters and digits; ids are 32 lowercase hex digits.
TOKEN = re.compile(r"\b[A-Za-z0-9]{32}\b")
HEX_ID = re.compile(r"[0-9a-f]{32}")

#: Every example, and the test file that runs it: a new example needs a test.
RUN_BY = {
    "generate_psk.py": "test_examples.py",
    "rotate_all.py": "test_examples.py",
    "tunnel_lifecycle.py": "test_examples_lifecycle.py",
    "rotate_to_strongswan.py": "test_examples_strongswan.py",
    "swanctl_psk_hook.py": "test_examples_strongswan.py",
}


@attrs.frozen
class Done:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


async def run_example(name: str, *args: str, emulator: Emulator, cwd: Path) -> Done:
    """``python examples/<name> ARGS`` in ``cwd``, against ``emulator`` and nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "MAGICWAN_"))}
    env.update(emulator.env())
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / name),
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode())


def assert_only_ids(text: str) -> None:
    """Every 32-character token printed is an id, none is a PSK."""
    for token in TOKEN.findall(text):
        assert HEX_ID.fullmatch(token), "a PSK-like token was printed"


def read_secret(path: Path) -> str:
    """A PSK file an example wrote: owner-only, one line."""
    assert path.stat().st_mode & 0o777 == 0o600, path
    return path.read_text().removesuffix("\n")


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with run(tunnels=20, rate_limit=None) as emu:
        yield emu


def test_every_example_is_run_by_a_test() -> None:
    assert sorted(path.name for path in EXAMPLES.glob("*.py")) == sorted(RUN_BY)
    here = Path(__file__).parent
    for name, test_file in RUN_BY.items():
        assert f'"{name}"' in (here / test_file).read_text(), (name, test_file)


@pytest.mark.parametrize("name", sorted(RUN_BY))
def test_every_example_says_how_to_run_it(name: str) -> None:
    text = (EXAMPLES / name).read_text()
    assert text.startswith('"""')
    docstring = text.split('"""')[1]
    assert f"examples/{name}" in docstring or "Command" in docstring
    assert "MAGICWAN_ACCOUNT_ID" not in text  # Cloudflare's variables, as everywhere else


# -- generate_psk.py ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_generate_psk_keeps_the_psk_the_emulator_now_holds(
    emulator: Emulator, tmp_path: Path
) -> None:
    tunnel_id = emulator.tunnel_ids[0]
    done = await run_example(
        "generate_psk.py", tunnel_id, "--keep", "kept", emulator=emulator, cwd=tmp_path
    )

    assert done.returncode == 0, done.output
    assert f"validate_only: tunnel {tunnel_id} can get a new PSK" in done.stdout
    assert f"generated a 32-character PSK for tunnel {tunnel_id}" in done.stdout
    kept = read_secret(tmp_path / "kept" / f"{tunnel_id}.psk")
    assert kept == emulator.state.current_psk(emulator.account_id, tunnel_id)
    assert kept not in done.output
    assert_only_ids(done.output)


@pytest.mark.asyncio
async def test_generate_psk_of_an_unknown_tunnel_fails_and_keeps_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    done = await run_example(
        "generate_psk.py", "0" * 32, "--keep", "kept", emulator=emulator, cwd=tmp_path
    )

    assert done.returncode == 1
    assert "failed: HTTP 404" in done.stderr
    assert "Traceback" not in done.stderr
    assert list((tmp_path / "kept").iterdir()) == []


# -- rotate_all.py -----------------------------------------------------------------------


def _router(emulator: Emulator, tunnel_id: str) -> str:
    name = emulator.state.tunnel(emulator.account_id, tunnel_id).name
    assert name
    return name


@pytest.mark.asyncio
@pytest.mark.parametrize("method", ["set", "generate"])
async def test_rotate_all_puts_every_new_psk_on_its_router(
    emulator: Emulator, tmp_path: Path, method: str
) -> None:
    account, ids = emulator.account_id, emulator.tunnel_ids
    before = {t: emulator.state.current_psk(account, t) for t in ids}
    for tunnel_id in ids:
        (tmp_path / "routers" / _router(emulator, tunnel_id)).mkdir(parents=True)

    done = await run_example(
        "rotate_all.py",
        *("--journal", "rotation.jsonl", "--routers", "routers", "--keep", "kept"),
        *("--method", method),
        emulator=emulator,
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.output
    assert "20 tunnels: 20 rotated; journal: rotation.jsonl" in done.stdout
    records = read_journal(tmp_path / "rotation.jsonl")
    for tunnel_id in ids:
        held = emulator.state.current_psk(account, tunnel_id)
        assert held is not None
        assert held != before[tunnel_id]
        assert read_secret(tmp_path / "routers" / _router(emulator, tunnel_id) / "psk") == held
        assert records[(account, tunnel_id)].psk == held
        assert records[(account, tunnel_id)].delivered
        assert held not in done.output
    assert list((tmp_path / "kept").iterdir()) == []  # nothing failed: nothing to keep
    assert_only_ids(done.output)


@pytest.mark.asyncio
async def test_rotate_all_halts_keeps_the_undelivered_psks_and_resumes(
    emulator: Emulator, tmp_path: Path
) -> None:
    account, ids = emulator.account_id, emulator.tunnel_ids
    before = {t: emulator.state.current_psk(account, t) for t in ids}
    missing, present = ids[:5], ids[5:]  # the first five routers are not in the inventory
    for tunnel_id in present:
        (tmp_path / "routers" / _router(emulator, tunnel_id)).mkdir(parents=True)
    arguments = ("--journal", "rotation.jsonl", "--routers", "routers", "--keep", "kept")

    first = await run_example("rotate_all.py", *arguments, emulator=emulator, cwd=tmp_path)

    # The canary and the next four fail: the rollout window stays at one tunnel, and
    # halt_after=5 stops the rotation before any other tunnel gets a new PSK.
    assert first.returncode == 1, first.output
    assert "20 tunnels: 15 not_attempted, 5 undelivered" in first.stdout
    assert "run again with --resume" in first.stderr
    for tunnel_id in missing:
        held = emulator.state.current_psk(account, tunnel_id)
        assert held != before[tunnel_id]
        assert read_secret(tmp_path / "kept" / f"{tunnel_id}.psk") == held  # never dropped
        assert f"undelivered {tunnel_id}" in first.stdout
    for tunnel_id in present:
        assert emulator.state.current_psk(account, tunnel_id) == before[tunnel_id]
        assert f"not attempted {tunnel_id}" in first.stdout
    undelivered = {t: emulator.state.current_psk(account, t) for t in missing}

    for tunnel_id in missing:
        (tmp_path / "routers" / _router(emulator, tunnel_id)).mkdir()
    second = await run_example(
        "rotate_all.py", *arguments, "--resume", emulator=emulator, cwd=tmp_path
    )

    assert second.returncode == 0, second.output
    assert "20 tunnels: 15 rotated, 5 skipped" in second.stdout
    for tunnel_id in ids:
        held = emulator.state.current_psk(account, tunnel_id)
        assert read_secret(tmp_path / "routers" / _router(emulator, tunnel_id) / "psk") == held
    for tunnel_id in missing:  # delivered without a new PSK
        assert emulator.state.current_psk(account, tunnel_id) == undelivered[tunnel_id]
        assert f"skipped {tunnel_id}" in second.stdout
    assert_only_ids(first.output + second.output)
