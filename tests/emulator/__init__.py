"""Tests of magicwan.emulator (a package, so its conftest does not shadow tests/conftest.py)."""
