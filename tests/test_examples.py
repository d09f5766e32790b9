"""Every program in examples/ runs against the emulator (a test here or beside it runs
each), does what it says (the emulator's state shows it), and never prints a PSK.
``tests/test_docs.py`` type-checks each of them under ``mypy --strict``, and CI runs
``mypy --strict examples``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from magicwan.emulator import Emulator, run
from magicwan.journal import read_journal
from tests.support.examples import EXAMPLES, assert_only_ids, read_secret, run_example

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with run(tunnels=20, rate_limit=None) as emu:
        yield emu


def test_every_example_is_run_by_a_test() -> None:
    """A test names each example in a call that runs it: ``run_example("name", ...)``, or
    ``EXAMPLES / "name"`` for a program an example runs."""
    tests = "\n".join(path.read_text() for path in TESTS.rglob("test_*.py"))
    run = set(re.findall(r'(?:run_example\(\s*|EXAMPLES / )"([^"]+\.py)"', tests))
    assert sorted(path.name for path in EXAMPLES.glob("*.py") if path.name not in run) == []


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda path: path.name)
def test_every_example_says_how_to_run_it(path: Path) -> None:
    text = path.read_text()
    assert text.startswith('"""')
    docstring = text.split('"""')[1]
    assert f"examples/{path.name}" in docstring or "Command" in docstring
    assert "MAGICWAN_ACCOUNT_ID" not in text  # Cloudflare's variables, as everywhere else


def _docstring(path: Path) -> str:
    return path.read_text().split('"""')[1]


#: The journal files the documentation's pages name: an example's must not be one of them.
_PAGE_JOURNALS = {
    name
    for page in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    for name in re.findall(r"[\w.-]+\.jsonl", page.read_text(encoding="utf-8"))
}


def test_each_example_has_a_journal_of_its_own() -> None:
    """A re-run of one example, or a page's snippet, never finds another's journal."""
    journals = {
        path.name: set(re.findall(r"--journal (\S+)", _docstring(path)))
        for path in EXAMPLES.glob("*.py")
    }
    named = [name for names in journals.values() for name in names]
    assert len(named) == len(set(named)), journals
    assert sorted(set(named) & _PAGE_JOURNALS) == []
    assert {name for name, names in journals.items() if names} >= {
        "rotate_all.py",
        "rotate_to_strongswan.py",
        "tunnel_lifecycle.py",
    }


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda path: path.name)
def test_every_try_it_recipe_starts_in_a_fresh_directory(path: Path) -> None:
    """The PSKs a recipe writes (journal, kept files) land in a temporary directory, never
    in a checkout; the example is still found from there."""
    lines = [line.strip() for line in _docstring(path).splitlines()]
    if not any(line.startswith("python -m magicwan.emulator") for line in lines):
        return  # no recipe (the delivery hook: another example runs it)
    start = lines.index('examples=$PWD/examples; cd "$(mktemp -d)"')
    emulator = next(i for i, line in enumerate(lines) if "magicwan.emulator" in line)
    assert start < emulator
    assert f'python "$examples/{path.name}"' in "\n".join(lines[emulator:])


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda path: path.name)
def test_every_example_documents_its_exit_statuses(path: Path) -> None:
    docstring = " ".join(_docstring(path).split())
    assert "Exit status 0" in docstring
    assert re.search(r"\b2\b[^.]*: ", docstring) or path.name == "swanctl_psk_hook.py"


#: How to run each example that talks to the API, with arguments it accepts.
_ARGUMENTS = {
    "generate_psk.py": ("0123456789abcdef0123456789abcdef", "--keep", "kept"),
    "rotate_all.py": ("--journal", "j.jsonl", "--routers", "routers", "--keep", "kept"),
    "rotate_to_strongswan.py": ("--journal", "j.jsonl", "--keep", "kept", "--no-load"),
    "tunnel_lifecycle.py": ("--journal", "j.jsonl", "--keep", "kept"),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("name", sorted(_ARGUMENTS))
@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({}, "CLOUDFLARE_ACCOUNT_ID"),
        ({"CLOUDFLARE_ACCOUNT_ID": "0" * 32}, "no credentials"),
    ],
    ids=["no-account", "no-credentials"],
)
async def test_every_example_refuses_a_missing_setting_with_status_2(
    name: str, env: dict[str, str], said: str, tmp_path: Path
) -> None:
    done = await run_example(name, *_ARGUMENTS[name], emulator=None, cwd=tmp_path, env=env)

    assert done.returncode == 2, done.output
    assert said in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


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


@pytest.mark.asyncio
async def test_rotate_all_again_without_resume_changes_nothing_and_exits_2(
    emulator: Emulator, tmp_path: Path
) -> None:
    account, ids = emulator.account_id, emulator.tunnel_ids
    for tunnel_id in ids:
        (tmp_path / "routers" / _router(emulator, tunnel_id)).mkdir(parents=True)
    arguments = ("--journal", "rotation.jsonl", "--routers", "routers", "--keep", "kept")
    first = await run_example("rotate_all.py", *arguments, emulator=emulator, cwd=tmp_path)
    assert first.returncode == 0, first.output
    held = {t: emulator.state.current_psk(account, t) for t in ids}

    again = await run_example("rotate_all.py", *arguments, emulator=emulator, cwd=tmp_path)

    assert again.returncode == 2, again.output
    assert "Traceback" not in again.stderr
    assert "the journal rotation.jsonl already records new PSKs for 20 of the 20" in again.stderr
    assert {t: emulator.state.current_psk(account, t) for t in ids} == held
    assert_only_ids(again.output)
