"""The route table: every endpoint once; compiling validates and quotes every id."""

from __future__ import annotations

import pytest

from magicwan import _routes
from magicwan._routes import (
    GET_IPSEC_TUNNEL,
    IPSEC_PSK_GENERATE,
    IPSEC_PSK_SET,
    IPSEC_PSK_VALIDATE,
    LIST_GRE_TUNNELS,
    CompiledRoute,
    Route,
)
from magicwan.errors import InvalidInputError

ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
TUNNEL = "C4A7362D577A6C3019A474FD6F485823"

ROUTES = [
    getattr(_routes, name)
    for name in _routes.__all__
    if name.isupper() and isinstance(getattr(_routes, name), Route)
]


def test_every_route_is_listed_and_well_formed() -> None:
    assert len(ROUTES) >= 8
    for route in ROUTES:
        assert isinstance(route, Route)
        assert route.method in ("GET", "POST", "PUT", "DELETE")
        assert route.template.startswith("/accounts/{account_id}/magic/")
        assert route.params[0] == "account_id"
        # Non-idempotent: a POST that changes a PSK (exclusive), or a create (no tunnel yet).
        if not route.idempotent:
            assert route.method == "POST"
            assert route.exclusive or route.params == ("account_id",)
        if route.method == "GET":
            assert route.idempotent
            assert not route.exclusive


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.template}")
@pytest.mark.parametrize("bad", ["", "../x", "a?b=1", "a/b", "x" * 33, "é", "a b", "%2e%2e"])
def test_compiling_refuses_any_id_that_is_not_a_cloudflare_id(route: Route, bad: str) -> None:
    ids = dict.fromkeys(route.params, TUNNEL)
    for name in route.params:
        with pytest.raises(InvalidInputError, match=name):
            route.compile(**{**ids, name: bad})


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.template}")
def test_compiling_needs_exactly_the_templates_ids(route: Route) -> None:
    ids = dict.fromkeys(route.params, TUNNEL)
    with pytest.raises(TypeError, match="unexpected"):
        route.compile(**ids, other=TUNNEL)
    with pytest.raises(TypeError, match="missing"):
        route.compile(**dict(list(ids.items())[1:]))


def test_a_compiled_route_is_the_path_and_its_properties() -> None:
    compiled = IPSEC_PSK_GENERATE.compile(account_id=ACCOUNT, tunnel_id=TUNNEL)
    assert isinstance(compiled, CompiledRoute)
    assert compiled.path == f"/accounts/{ACCOUNT}/magic/ipsec_tunnels/{TUNNEL}/psk_generate"
    assert compiled.method == "POST"
    assert not compiled.idempotent
    assert str(compiled) == "POST " + compiled.path
    # Hex ids: two spellings of one tunnel share one lock.
    assert compiled.lock_keys == (f"{ACCOUNT}/{TUNNEL.lower()}",)


def test_validating_variants_change_nothing_and_need_no_lock() -> None:
    compiled = IPSEC_PSK_VALIDATE.compile(account_id=ACCOUNT, tunnel_id=TUNNEL)
    assert compiled.query == (("validate_only", "true"),)
    assert compiled.idempotent
    assert compiled.lock_keys == ()


def test_a_bulk_set_locks_every_tunnel_it_names_in_sorted_order() -> None:
    compiled = IPSEC_PSK_SET.compile(account_id=ACCOUNT, locks=["bb", "AA", "aa", "cc"])
    assert compiled.path == f"/accounts/{ACCOUNT}/magic/ipsec_tunnels/psk"
    assert compiled.idempotent
    assert compiled.lock_keys == (f"{ACCOUNT}/aa", f"{ACCOUNT}/bb", f"{ACCOUNT}/cc")


def test_reads_take_no_lock() -> None:
    assert GET_IPSEC_TUNNEL.compile(account_id=ACCOUNT, tunnel_id=TUNNEL).lock_keys == ()
    assert LIST_GRE_TUNNELS.compile(account_id=ACCOUNT).path == (
        f"/accounts/{ACCOUNT}/magic/gre_tunnels"
    )


def test_only_the_tunnel_lists_may_answer_more_than_the_default_cap() -> None:
    # Cloudflare's list routes are not paginated: a 10,000-tunnel account answers ~8 MB in
    # one body. Every other route answers about one tunnel or one batch.
    large = {route for route in ROUTES if route.max_response_bytes is not None}
    assert large == {_routes.LIST_IPSEC_TUNNELS, LIST_GRE_TUNNELS}
    assert all(r.max_response_bytes == _routes.MAX_LIST_RESPONSE_BYTES for r in large)
    assert LIST_GRE_TUNNELS.compile(account_id=ACCOUNT).max_response_bytes == (
        _routes.MAX_LIST_RESPONSE_BYTES
    )
