"""Shared building blocks of magicwan's packages.

Importable, but not public API: anything here may change or go in any release, with no
compatibility promise. What is public is re-exported where users find it (``magicwan``,
``magicwan.ratelimit``, ...). Every module here is pure: no I/O, so the client, the rotation
engine, the command line and the emulator can share them without sharing each other.
"""

__all__: list[str] = []
