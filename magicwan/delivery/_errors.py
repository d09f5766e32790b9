"""The error a deliverer raises when a PSK did not reach the tunnel's other end.

Defined with the other errors in :mod:`magicwan.errors`; named here for deliverers.
"""

from magicwan.errors import PERMANENT_FAILURES, DeliveryError, DeliveryFailure

__all__ = ["PERMANENT_FAILURES", "DeliveryError", "DeliveryFailure"]
