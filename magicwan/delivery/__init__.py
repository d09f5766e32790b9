"""Delivery of new PSKs to the other end of each tunnel: the customer's router.

A *deliverer* is any ``async def deliver(delivery: Delivery) -> None``; it raises to
fail the delivery (preferably :class:`DeliveryError`).
"""

from magicwan.delivery._errors import DeliveryError, DeliveryFailure
from magicwan.delivery._model import Delivery

__all__ = ["Delivery", "DeliveryError", "DeliveryFailure"]
