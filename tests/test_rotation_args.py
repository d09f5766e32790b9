"""Rotation's argument handling, checked before anything is sent."""

from __future__ import annotations

import pytest

from magicwan import InvalidInputError, IPsecTunnel, MagicWAN
from magicwan.rotation import _targets

ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
A = "c4a7362d577a6c3019a474fd6f485823"
B = "0123456789abcdef0123456789abcdef"


def test_duplicates_are_dropped_keeping_first_order_and_spelling() -> None:
    assert _targets([A, B, A, A.upper(), B.upper()]) == [(A, None), (B, None)]


def test_tunnel_objects_and_ids_mix_and_the_object_is_kept() -> None:
    obj = IPsecTunnel(id=B.upper(), name="b")
    assert _targets([A, B, obj, IPsecTunnel(id=A)]) == [(A, IPsecTunnel(id=A)), (B, obj)]


def test_one_string_is_not_a_list_of_ids() -> None:
    with pytest.raises(TypeError, match="iterable"):
        _targets(A)


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
            client.tunnels.ipsec.psk.rotate(ACCOUNT, **kwargs)  # type: ignore[arg-type]
