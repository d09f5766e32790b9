"""Delivery of new PSKs to the other end of each tunnel: the customer's router.

A *deliverer* is any ``async def deliver(delivery: Delivery) -> None``; it raises to
fail the delivery (preferably :class:`DeliveryError`, whose ``permanent`` says that
trying again cannot help). Two ship here:

- :class:`StrongSwan` loads the PSK into a running strongSwan charon over its VICI
  socket and, with ``reauth=True``, re-authenticates the tunnel's IKE SA to prove it.
  The connection name and the identities are templates (``"{name}"``, ``"{ipsec_id}"``).
  It needs the optional ``vici`` package: ``pip install 'magicwan[strongswan]'``.
- :class:`Command` runs a program per tunnel with the PSK and a newline on its standard
  input (then end of file) and the tunnel's facts in ``MAGICWAN_*`` environment variables
  (see :data:`ENVIRONMENT`).

Both are :class:`Checkable`: ``await deliverer.check(target)`` tries the other end
without a PSK. :func:`limit_deliveries` bounds any deliverer to N deliveries at once and
one at a time per device (:func:`group_key`).

Neither ever puts the PSK in an exception message, a ``repr``, an argument list or an
environment.
"""

from magicwan.delivery._command import CHECK_VARIABLE, ENVIRONMENT, EX_CONFIG, Command
from magicwan.delivery._errors import PERMANENT_FAILURES, DeliveryError, DeliveryFailure
from magicwan.delivery._limit import GROUP_KEYS, LimitedDeliverer, group_key, limit_deliveries
from magicwan.delivery._model import Checkable, Deliverer, Delivery, DeliveryTarget
from magicwan.delivery._strongswan import DEFAULT_SOCKET, FIELDS, StrongSwan

__all__ = [
    "CHECK_VARIABLE",
    "DEFAULT_SOCKET",
    "ENVIRONMENT",
    "EX_CONFIG",
    "FIELDS",
    "GROUP_KEYS",
    "PERMANENT_FAILURES",
    "Checkable",
    "Command",
    "Deliverer",
    "Delivery",
    "DeliveryError",
    "DeliveryFailure",
    "DeliveryTarget",
    "LimitedDeliverer",
    "StrongSwan",
    "group_key",
    "limit_deliveries",
]
