"""magicwan.delivery's model and error: what a deliverer is handed, and what it raises."""

from __future__ import annotations

import typing

import attrs
import pytest

from magicwan import IPsecTunnel, MagicWANError
from magicwan.delivery import (
    PERMANENT_FAILURES,
    Delivery,
    DeliveryError,
    DeliveryFailure,
    DeliveryTarget,
)

PSK = "O3bwKSjnaoCxDoUxjcq4Rk8ZKkezQUiy"
TUNNEL = IPsecTunnel(
    id="c4a7362d577a6c3019a474fd6f485823",
    name="branch-1",
    cloudflare_endpoint="162.159.0.1",
    customer_endpoint="203.0.113.7",
    ipsec_id="c4a7362d577a6c3019a474fd6f485823.023e105f4ecef8ad9ca31a8372d0c353.ipsec.cloudflare.com",
)


def test_the_psk_is_not_in_repr() -> None:
    delivery = Delivery(account_id="acct", tunnel_id=TUNNEL.id, psk=PSK, tunnel=TUNNEL)
    assert PSK not in repr(delivery)
    assert "branch-1" in repr(delivery)


def test_facts_come_from_the_tunnel() -> None:
    delivery = Delivery(account_id="acct", tunnel_id=TUNNEL.id, psk=PSK, tunnel=TUNNEL)
    assert delivery.name == "branch-1"
    assert delivery.cloudflare_endpoint == "162.159.0.1"
    assert delivery.customer_endpoint == "203.0.113.7"
    assert delivery.ipsec_id == TUNNEL.ipsec_id


def test_an_explicit_ipsec_id_wins_over_the_tunnels() -> None:
    delivery = Delivery(
        account_id="a", tunnel_id=TUNNEL.id, psk=PSK, tunnel=TUNNEL, ipsec_id="x.example"
    )
    assert delivery.ipsec_id == "x.example"


def test_without_a_tunnel_the_facts_are_unknown() -> None:
    delivery = Delivery(account_id="a", tunnel_id="t1", psk=PSK)
    assert (delivery.name, delivery.cloudflare_endpoint, delivery.customer_endpoint) == (None,) * 3
    assert delivery.ipsec_id is None
    assert (
        Delivery(account_id="a", tunnel_id="t1", psk=PSK, ipsec_id="i.example").ipsec_id
        == "i.example"
    )


def test_delivery_is_frozen_keyword_only_and_typed() -> None:
    delivery = Delivery(account_id="a", tunnel_id="t1", psk=PSK)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        delivery.psk = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Delivery("a", "t1", PSK)  # type: ignore[call-arg, arg-type]
    with pytest.raises(TypeError):
        Delivery(account_id="a", tunnel_id="t1", psk=PSK.encode())  # type: ignore[arg-type]


def test_delivery_error_is_a_magicwan_error_with_reason_and_tunnel() -> None:
    error = DeliveryError("tunnel t1: it broke", reason="timeout", tunnel_id="t1")
    assert isinstance(error, MagicWANError)
    assert (error.reason, error.tunnel_id, str(error)) == ("timeout", "t1", "tunnel t1: it broke")
    assert repr(error) == (
        "DeliveryError('tunnel t1: it broke', reason='timeout', permanent=False)"
    )


@pytest.mark.parametrize("reason", typing.get_args(DeliveryFailure))
def test_permanent_defaults_to_whether_the_reason_is_one_retries_cannot_change(
    reason: DeliveryFailure,
) -> None:
    error = DeliveryError("tunnel t1: no", reason=reason, tunnel_id="t1")
    assert error.permanent is (reason in PERMANENT_FAILURES)
    assert DeliveryError("x", reason=reason, permanent=True).permanent is True
    assert DeliveryError("x", reason=reason, permanent=False).permanent is False


def test_the_permanent_failures_are_configuration_and_refusal() -> None:
    assert {"misconfigured", "rejected", "not_started"} == PERMANENT_FAILURES
    assert set(typing.get_args(DeliveryFailure)) >= PERMANENT_FAILURES


def test_a_delivery_is_a_target_with_a_psk() -> None:
    target = DeliveryTarget(account_id="a", tunnel_id=TUNNEL.id, tunnel=TUNNEL)
    delivery = Delivery(account_id="a", tunnel_id=TUNNEL.id, psk=PSK, tunnel=TUNNEL)
    assert isinstance(delivery, DeliveryTarget)
    assert not hasattr(target, "psk")
    assert (target.name, target.customer_endpoint, target.ipsec_id) == (
        "branch-1",
        "203.0.113.7",
        TUNNEL.ipsec_id,
    )
    assert repr(delivery).removeprefix("Delivery") == repr(target).removeprefix("DeliveryTarget")
