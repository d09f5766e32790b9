"""``magicwan.rotation.effects``: what a failed delivery says, in words true for its count."""

from __future__ import annotations

import pytest

from magicwan import new_psk
from magicwan.delivery import Delivery
from magicwan.rotation import effects
from magicwan.rotation.machine import Undelivered

TUNNEL = "5adf9950cf16e16d7c316f949e4c8e51"


async def _no_sleep(seconds: float) -> None:
    return None


async def _refuse(delivery: Delivery) -> None:
    raise RuntimeError("router refused the key")


@pytest.mark.asyncio
@pytest.mark.parametrize(("retries", "said"), [(0, "after 1 try:"), (2, "after 3 tries:")])
async def test_a_failed_delivery_counts_its_tries_in_words(retries: int, said: str) -> None:
    delivery = Delivery(account_id="a" * 32, tunnel_id=TUNNEL, psk=new_psk())

    event = await effects.deliver_with_retries(
        _refuse, delivery, retries=retries, per_try=5.0, sleep=_no_sleep
    )

    assert isinstance(event, Undelivered)
    assert said in str(event.error)
    assert "1 tries" not in str(event.error)


@pytest.mark.asyncio
async def test_a_psk_a_device_cannot_take_is_one_try_not_1_tries() -> None:
    delivery = Delivery(account_id="a" * 32, tunnel_id=TUNNEL, psk="two\nlines")

    event = await effects.deliver_with_retries(
        _refuse, delivery, retries=2, per_try=5.0, sleep=_no_sleep
    )

    assert isinstance(event, Undelivered)
    assert str(event.error).startswith("delivery failed after 1 try: the PSK holds characters")
