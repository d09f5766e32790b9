"""Frozen attrs models of Magic WAN resources. They hold data, never parsing code."""

from magicwan.models.psk import PSKGenerateResult, PSKMetadata

__all__ = ["PSKGenerateResult", "PSKMetadata"]
