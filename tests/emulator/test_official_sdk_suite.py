"""Cloudflare's own SDK tests for the Magic Transit tunnels, run against the emulator.

The official SDK's sdist (``cloudflare``, pinned to :data:`CLOUDFLARE_VERSION`) ships its
generated tests. This fetches the sdist with pip (never vendored here), unpacks it to a temporary
directory, and runs ``tests/api_resources/magic_transit/test_ipsec_tunnels.py`` and
``test_gre_tunnels.py`` with the sdist's own source, in a pytest of their own, against an emulator
seeded with what they expect: their account id, their e-mail and key, and an IPsec and a GRE tunnel
with their id. Their conftest reads ``TEST_API_BASE_URL``.

Those tests are written for Prism, a mock that keeps no state; before each one the harness restores
the emulator to its seed (``tests/emulator/_official_sdk_plugin.py``), so each meets the server it
assumes while the emulator stays stateful. A test may fail only if :data:`MOCK_ONLY` lists it, with
the reason only a mock can pass it; a listed test that passes fails this test too (the list must
stay true). Their own ``@pytest.mark.skip`` tests stay skipped.

Needs the network to PyPI (pip download, once per pytest cache) and the ``bench`` and ``test``
extras (the official SDK's dependencies, ``httpx-aiohttp`` for its aiohttp client). Without the
network it skips, unless ``CI`` is set: then it fails.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Final

import pytest

pytest.importorskip("cloudflare", reason="the official SDK's dependencies (the bench extra)")
pytest.importorskip("httpx_aiohttp", reason="httpx-aiohttp (the test extra)")

from magicwan.emulator import run
from tests.emulator._official_sdk_plugin import ADMIN_URL_ENV

#: The official SDK release whose tests run (its sdist, from PyPI).
CLOUDFLARE_VERSION: Final = "5.9.0"
#: The account id, and the IPsec and GRE tunnel id, that every official test uses.
OFFICIAL_ID: Final = "023e105f4ecef8ad9ca31a8372d0c353"
#: The official conftest's credentials (its placeholders, not secrets).
OFFICIAL_EMAIL: Final = "user@example.com"
OFFICIAL_KEY: Final = "144c9defac04969c7bfad8efaa8ea194"
TEST_FILES: Final = (
    "tests/api_resources/magic_transit/test_ipsec_tunnels.py",
    "tests/api_resources/magic_transit/test_gre_tunnels.py",
)
_CREATE_ALL_PARAMS: Final = (
    "placeholder values a real API refuses: custom_remote_identities.fqdn_id 'fqdn_id' (Cloudflare "
    "documents <label>.<account id>.custom.ipsec.cloudflare.com), bgp.customer_asn 0 (reserved, "
    "RFC 7607), bgp.extra_prefixes ['string'] (not a prefix), automatic_return_routing true "
    "(needs the coupler_integration account flag)"
)
#: Tests (class::name, every parametrization) that only a stateless mock can pass, and why.
MOCK_ONLY: Final[dict[str, str]] = {
    "TestIPSECTunnels::test_method_create_with_all_params": _CREATE_ALL_PARAMS,
    "TestAsyncIPSECTunnels::test_method_create_with_all_params": _CREATE_ALL_PARAMS,
}
#: The whole run's budget (the child pytest takes about 10 s here).
_TIMEOUT: Final = 240.0


def _download(cache: Path) -> Path:
    """The sdist, downloaded with pip into ``cache`` unless already there (``pip download
    --no-binary cloudflare --no-deps cloudflare==X``: about 6 s here)."""
    name = f"cloudflare-{CLOUDFLARE_VERSION}.tar.gz"
    sdist = cache / name
    if sdist.is_file():
        return sdist
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        # The sdist of cloudflare only: ":all:" would also build its build backend
        # (hatchling and the rest) from source, minutes instead of seconds.
        "--no-binary",
        "cloudflare",
        "--no-deps",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(cache),
        f"cloudflare=={CLOUDFLARE_VERSION}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)  # noqa: S603
    if done.returncode != 0 or not sdist.is_file():
        reason = f"pip download cloudflare=={CLOUDFLARE_VERSION} failed: {done.stderr[-800:]}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return sdist


def _unpack(sdist: Path, into: Path) -> Path:
    """The sdist's ``src`` and ``tests`` (and its pyproject.toml: pytest's settings)."""
    top = f"cloudflare-{CLOUDFLARE_VERSION}"
    wanted = (f"{top}/src/", f"{top}/tests/", f"{top}/pyproject.toml")
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(wanted)]
        archive.extractall(into, members=members, filter="data")
    return into / top


@pytest.fixture(scope="module")
def official_tree(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(request.config, "cache", None)
    where = (
        cache.mkdir("magicwan-cloudflare-sdist")
        if cache is not None
        else tmp_path_factory.mktemp("sdist")
    )
    return _unpack(_download(Path(where)), tmp_path_factory.mktemp("official"))


def _results(report: Path) -> dict[str, list[tuple[str, str]]]:
    """``{"passed"|"failed"|"skipped": [(class::name[param], message), ...]}``."""
    out: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314 - our own child's file
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", (child.get("message") or "")[:300]
            elif child.tag == "skipped" and outcome == "passed":
                outcome = "skipped"
        out[outcome].append((name, message))
    return out


def _base(name: str) -> str:
    return name.split("[", 1)[0]


@pytest.mark.asyncio
@pytest.mark.timeout(_TIMEOUT + 60)
async def test_the_official_sdk_tunnel_tests_pass_against_the_emulator(
    official_tree: Path, tmp_path: Path
) -> None:
    report = tmp_path / "official.xml"
    async with run(
        tunnels=2,
        gre_tunnels=2,
        ipsec_ids=[OFFICIAL_ID],
        gre_ids=[OFFICIAL_ID],
        account_id=OFFICIAL_ID,
        api_email=OFFICIAL_EMAIL,
        api_key=OFFICIAL_KEY,
        rate_limit=None,
    ) as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
        env.update(
            TEST_API_BASE_URL=emu.base_url,
            PYTHONPATH=os.pathsep.join([str(official_tree / "src"), str(Path(__file__).parent)]),
            PYTHONDONTWRITEBYTECODE="1",
        )
        env[ADMIN_URL_ENV] = emu.admin_url
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-o",
            "addopts=",  # theirs asks for pytest-xdist (-n auto)
            "-p",
            "no:cacheprovider",
            "-p",
            "_official_sdk_plugin",
            f"--junitxml={report}",
            *TEST_FILES,
        ]
        child = await asyncio.create_subprocess_exec(
            *command,
            cwd=official_tree,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(child.communicate(), _TIMEOUT)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        routes = dict(emu.state.requests.by_route)

    text = output.decode(errors="replace")
    assert report.is_file(), text[-3000:]
    results = _results(report)
    failed = dict(results["failed"])
    mock_only = [name for name in failed if _base(name) in MOCK_ONLY]
    print(  # the counts, for -s / -rP
        f"official SDK {CLOUDFLARE_VERSION} tunnel tests: {len(results['passed'])} passed, "
        f"{len(failed) - len(mock_only)} failed, {len(mock_only)} mock-only, "
        f"{len(results['skipped'])} skipped by their authors"
    )
    unexpected = {name: m for name, m in failed.items() if _base(name) not in MOCK_ONLY}
    assert not unexpected, "\n".join(f"{name}: {m}" for name, m in sorted(unexpected.items()))
    passing_mock_only = sorted({_base(name) for name, _ in results["passed"]} & set(MOCK_ONLY))
    assert not passing_mock_only, f"listed as mock-only, but they pass: {passing_mock_only}"
    assert len(results["passed"]) >= 200, text[-3000:]
    # Every route the official tests reach was served (and none answered 405).
    for route in (
        "list_ipsec_tunnels",
        "get_ipsec_tunnel",
        "create_ipsec_tunnel",
        "delete_ipsec_tunnel",
        "psk_generate",
        "psk_set",
        "list_gre_tunnels",
        "get_gre_tunnel",
        "delete_gre_tunnel",
    ):
        assert routes.get(route), (route, routes)
    assert "unmatched" not in routes, routes
