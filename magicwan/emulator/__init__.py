"""A local emulator of Cloudflare's Magic WAN API (work in progress)."""

__all__: list[str] = []
