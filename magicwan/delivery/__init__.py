"""Delivering each new PSK to the tunnel's other end."""

from magicwan.delivery._model import Deliverer, Delivery
from magicwan.errors import DeliveryError

__all__ = ["Deliverer", "Delivery", "DeliveryError"]
