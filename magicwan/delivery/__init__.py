"""Delivery of new PSKs to the other end of each tunnel: the customer's router.

A *deliverer* is any ``async def deliver(delivery: Delivery) -> None``; it raises to
fail the delivery (preferably :class:`DeliveryError`). Two ship here:

- :class:`StrongSwan` loads the PSK into a running strongSwan charon over its VICI
  socket and, with ``reauth=True``, re-authenticates the tunnel's IKE SA to prove it.
  It needs the optional ``vici`` package: ``pip install 'magicwan[strongswan]'``.
- :class:`Command` runs a program per tunnel with the PSK on its standard input and the
  tunnel's facts in ``MAGICWAN_*`` environment variables (see :data:`ENVIRONMENT`).

Neither ever puts the PSK in an exception message, a ``repr``, an argument list or an
environment.
"""

from magicwan.delivery._command import ENVIRONMENT, Command
from magicwan.delivery._errors import DeliveryError, DeliveryFailure
from magicwan.delivery._model import Deliverer, Delivery
from magicwan.delivery._strongswan import DEFAULT_SOCKET, FIELDS, StrongSwan

__all__ = [
    "DEFAULT_SOCKET",
    "ENVIRONMENT",
    "FIELDS",
    "Command",
    "Deliverer",
    "Delivery",
    "DeliveryError",
    "DeliveryFailure",
    "StrongSwan",
]
