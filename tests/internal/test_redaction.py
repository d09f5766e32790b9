"""``shown_id``: how text meant for people names an id the SDK did not get from Cloudflare."""

from __future__ import annotations

import pytest

from magicwan import new_psk
from magicwan.internal.redaction import is_cloudflare_id, shown_id
from tests.support.constants import ACCOUNT, TUNNEL


def test_a_cloudflare_shaped_id_is_shown_as_it_was() -> None:
    assert shown_id(TUNNEL) == TUNNEL
    assert shown_id(TUNNEL, "tunnel") == f"tunnel {TUNNEL}"
    assert shown_id(ACCOUNT, "account", quoted=True) == f"account {ACCOUNT!r}"


@pytest.mark.parametrize(
    "value",
    [new_psk(), TUNNEL.upper(), TUNNEL[:31], TUNNEL + "0", "t1", "../x", "", None, 42],
    ids=["psk", "upper", "short", "long", "letters", "path", "empty", "none", "int"],
)
def test_anything_else_is_described_without_it(value: object) -> None:
    assert not is_cloudflare_id(value)
    for kind in ("", "tunnel"):
        text = shown_id(value, kind, quoted=True)
        assert "not shown" in text
        if isinstance(value, str) and value:
            assert value not in text
    assert "Cloudflare tunnel id" in shown_id(value, "tunnel")
