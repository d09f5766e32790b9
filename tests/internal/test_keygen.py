"""``magicwan.new_psk`` (``magicwan/internal/keygen.py``): fresh PSKs for a bulk set."""

from __future__ import annotations

from magicwan import new_psk


def test_new_psk_is_32_alphanumerics_and_never_repeats() -> None:
    psks = {new_psk() for _ in range(200)}
    assert len(psks) == 200
    for psk in psks:
        assert len(psk) == 32
        assert psk.isascii()
        assert psk.isalnum()
