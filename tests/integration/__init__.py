"""Integration tests: the SDK against the real emulator over loopback."""
