"""The request body of a tunnel create or update, from its params model."""

from __future__ import annotations

from typing import Any

from magicwan._converter import converter  # private: resources structure results
from magicwan.models.gre import GRETunnelParams
from magicwan.models.tunnels import IPsecTunnelParams

__all__ = ["tunnel_body"]


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def tunnel_body(params: IPsecTunnelParams | GRETunnelParams) -> dict[str, Any]:
    """The fields given (None is left out); ``health_check.target`` as its ``saved``
    address, the form Cloudflare takes without the ``x-magic-new-hc-target`` header."""
    if not isinstance(params, IPsecTunnelParams | GRETunnelParams):
        raise TypeError(f"expected tunnel params, got {type(params).__name__}")
    body: dict[str, Any] = _without_none(converter.unstructure(params))
    health_check = body.get("health_check")
    if isinstance(health_check, dict) and isinstance(health_check.get("target"), dict):
        target = health_check["target"]
        if "saved" in target:
            health_check["target"] = target["saved"]
        else:
            del health_check["target"]
    return body
