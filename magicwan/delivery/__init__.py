"""Delivery of new PSKs to the other end of each tunnel: the customer's router.

A *deliverer* is any ``async def deliver(delivery: Delivery) -> None``; it raises to
fail the delivery (preferably :class:`DeliveryError`). :class:`Command` runs a program
per tunnel with the PSK on its standard input and the tunnel's facts in ``MAGICWAN_*``
environment variables (see :data:`ENVIRONMENT`).
"""

from magicwan.delivery._command import ENVIRONMENT, Command
from magicwan.delivery._errors import DeliveryError, DeliveryFailure
from magicwan.delivery._model import Delivery

__all__ = ["ENVIRONMENT", "Command", "Delivery", "DeliveryError", "DeliveryFailure"]
