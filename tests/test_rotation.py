"""``magicwan.rotation.rotate`` on its own: driven by plain fake callables, no HTTP at all.

The scenarios against the emulator (faults, journal reruns, cancellation) are in
``tests/integration/test_rotation.py``; here are the rules checked before anything is sent.
"""

from __future__ import annotations

import pytest

from magicwan import InvalidInputError, IPsecTunnel, MagicWAN, PSKGenerateResult, Reply, new_psk
from magicwan.rotation import rotate
from tests.support.constants import ACCOUNT

A = "c4a7362d577a6c3019a474fd6f485823"
B = "0123456789abcdef0123456789abcdef"


class FakeAPI:
    """The two callables rotation is given, recording every tunnel asked for."""

    def __init__(self) -> None:
        self.generated: list[str] = []

    async def generate(
        self, account_id: str, tunnel_id: str, validate_only: bool
    ) -> Reply[PSKGenerateResult]:
        self.generated.append(tunnel_id)
        result = PSKGenerateResult(ipsec_tunnel_id=tunnel_id, psk=new_psk())
        return Reply(result, attempts=1, uncertain=False)

    async def read_back(self, account_id: str, tunnel_id: str) -> Reply[IPsecTunnel]:
        raise AssertionError("nothing was uncertain: nothing is read back")


@pytest.mark.asyncio
async def test_duplicates_are_dropped_keeping_first_order_and_spelling() -> None:
    api = FakeAPI()
    ids = [A, B, A, A.upper(), B.upper()]
    outcomes = [o async for o in rotate(api.generate, api.read_back, ACCOUNT, ids, concurrency=1)]
    assert api.generated == [A, B]
    assert [o.tunnel_id for o in outcomes] == [A, B]
    assert all(o.ok for o in outcomes)


def test_one_string_is_not_a_list_of_ids() -> None:
    api = FakeAPI()
    with pytest.raises(TypeError, match="not one string"):
        rotate(api.generate, api.read_back, ACCOUNT, A)
    assert api.generated == []


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
