"""The IKE lab (magicwan.emulator.ike) itself: isolation, teardown, and skip-or-fail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tests.support.strongswan as harness
from tests.support.strongswan import (
    IKELab,
    ike_lab,
    make_tunnels,
    require_strongswan,
)


def namespace(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


@pytest.mark.asyncio
async def test_the_daemons_share_a_private_network_each_with_its_own_run(
    lab: IKELab,
) -> None:
    edge, router = lab.pid("edge"), lab.pid("router")
    assert namespace(edge, "net") == namespace(router, "net") != namespace("self", "net")
    assert len({namespace(edge, "mnt"), namespace(router, "mnt"), namespace("self", "mnt")}) == 3
    assert Path(lab.router_socket).is_socket()
    assert Path(lab.edge_socket).is_socket()
    assert not Path(lab.router_socket).is_relative_to("/run")


@pytest.mark.asyncio
async def test_everything_is_torn_down_even_when_the_test_fails(tmp_path: Path) -> None:
    require_strongswan()
    started: list[IKELab] = []

    async def a_failing_test() -> None:
        async with ike_lab(make_tunnels(1), keep_logs=tmp_path / "logs") as lab:
            started.append(lab)
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError, match="the test failed"):
        await a_failing_test()
    [lab] = started
    pids = [lab.pid("edge"), lab.pid("router")]
    assert not lab.directory.exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert "charon" in (tmp_path / "logs" / "edge.log").read_text()  # logs kept for debugging


def test_missing_prerequisites_skip_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "strongswan_missing", lambda **_: "needs a unicorn")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs a unicorn"):
        require_strongswan()


def test_missing_prerequisites_fail_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "strongswan_missing", lambda **_: "needs a unicorn")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match=r"must run under CI.*needs a unicorn"):
        require_strongswan()


def test_present_prerequisites_neither_skip_nor_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "strongswan_missing", lambda **_: None)
    monkeypatch.setenv("CI", "1")
    require_strongswan()
