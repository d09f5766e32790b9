"""``magicwan.rotation.rotate`` on its own: driven by plain fake callables, no HTTP at all.

The scenarios against the emulator (faults, journal reruns, cancellation, late stores) are
in ``tests/integration/``; here are the engine's rules, checked with fakes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from magicwan import (
    InvalidInputError,
    IPsecTunnel,
    MagicWAN,
    PSKGenerateResult,
    PSKSetResult,
    Reply,
    new_psk,
)
from magicwan.rotation import Rotation, rotate
from tests.support.constants import ACCOUNT

A = "c4a7362d577a6c3019a474fd6f485823"
B = "0123456789abcdef0123456789abcdef"


class FakeAPI:
    """The callables rotation is given, recording every tunnel asked for."""

    def __init__(self) -> None:
        self.generated: list[str] = []

    async def generate(
        self, account_id: str, tunnel_id: str, validate_only: bool
    ) -> Reply[PSKGenerateResult]:
        self.generated.append(tunnel_id)
        result = PSKGenerateResult(ipsec_tunnel_id=tunnel_id, psk=new_psk())
        return Reply(result, attempts=1, uncertain=False)

    async def set_psks(
        self, account_id: str, psks: Mapping[str, str], validate_only: bool
    ) -> Reply[PSKSetResult]:
        raise AssertionError("method='generate' never sets")

    async def read_back(self, account_id: str, tunnel_id: str) -> Reply[IPsecTunnel]:
        raise AssertionError("nothing was uncertain: nothing is read back")

    def rotate(self, tunnels: Any, **kwargs: Any) -> Rotation[Any]:
        return rotate(
            ACCOUNT,
            tunnels,
            generate=self.generate,
            set_psks=self.set_psks,
            read_back=self.read_back,
            **kwargs,
        )


@pytest.mark.asyncio
async def test_duplicates_are_dropped_keeping_first_order_and_spelling() -> None:
    api = FakeAPI()
    ids = [A, B, A, A.upper(), B.upper()]
    outcomes = [o async for o in api.rotate(ids, concurrency=1)]
    assert api.generated == [A, B]
    assert [o.tunnel_id for o in outcomes] == [A, B]
    assert all(o.ok for o in outcomes)


@pytest.mark.asyncio
async def test_tunnel_objects_and_ids_mix_and_the_object_is_kept() -> None:
    api = FakeAPI()
    obj = IPsecTunnel(id=B.upper(), name="b")
    outcomes = [o async for o in api.rotate([A, B, obj, IPsecTunnel(id=A)], concurrency=1)]
    assert api.generated == [A, B]
    assert [(o.tunnel_id, o.tunnel) for o in outcomes] == [(A, IPsecTunnel(id=A)), (B, obj)]


def test_one_string_is_not_a_list_of_ids() -> None:
    api = FakeAPI()
    with pytest.raises(TypeError, match="iterable"):
        api.rotate(A)
    assert api.generated == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tunnels": [A, "../etc"]}, "tunnel_id"),
        ({"tunnels": [A], "concurrency": 0}, "concurrency"),
        ({"tunnels": [A], "journal": 5}, "journal"),
        ({"tunnels": [A], "method": "push"}, "method"),
        ({"tunnels": [A], "method": "set"}, "needs a journal"),
        ({"tunnels": [A], "batch_size": 0}, "batch_size"),
        ({"tunnels": [A], "batch_size": 1001}, "batch_size"),
        ({"tunnels": [A], "halt_after": 0}, "halt_after"),
        ({"tunnels": [A], "deliver": "push"}, "deliver"),
        ({"tunnels": [A], "deliver_retries": -1}, "deliver_retries"),
        ({"tunnels": [A], "deliver_timeout": 0}, "deliver_timeout"),
        ({"tunnels": [A], "settle_window": -1}, "settle_window"),
        ({"tunnels": [A], "settle_window": float("nan")}, "settle_window"),
        ({"tunnels": [A], "drain_timeout": 0}, "drain_timeout"),
    ],
)
async def test_bad_arguments_are_refused_when_rotate_is_called(
    kwargs: dict[str, object], message: str
) -> None:
    async with MagicWAN(api_token="t") as client:
        with pytest.raises(InvalidInputError, match=message):
            client.tunnels.ipsec.psk.rotate(ACCOUNT, **kwargs)  # type: ignore[call-overload]
