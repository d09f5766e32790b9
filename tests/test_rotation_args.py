"""Rotation's argument handling, checked before anything is sent."""

from __future__ import annotations

import pytest

from magicwan import InvalidInputError, MagicWAN
from magicwan.rotation import _unique_ids

ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
A = "c4a7362d577a6c3019a474fd6f485823"
B = "0123456789abcdef0123456789abcdef"


def test_duplicates_are_dropped_keeping_first_order_and_spelling() -> None:
    assert _unique_ids([A, B, A, A.upper(), B.upper()]) == [A, B]


def test_one_string_is_not_a_list_of_ids() -> None:
    with pytest.raises(TypeError, match="not one string"):
        _unique_ids(A)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tunnel_ids": [A, "../etc"]}, "tunnel_id"),
        ({"tunnel_ids": [A], "concurrency": 0}, "concurrency"),
        ({"tunnel_ids": [A], "journal": 5}, "journal"),
    ],
)
async def test_bad_arguments_are_refused_when_rotate_is_called(
    kwargs: dict[str, object], message: str
) -> None:
    async with MagicWAN(api_token="t") as client:
        with pytest.raises(InvalidInputError, match=message):
            client.tunnels.ipsec.psk.rotate(ACCOUNT, **kwargs)  # type: ignore[arg-type]
