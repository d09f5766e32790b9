"""The plain-Python parts: models, state, token bucket, fault injector (no sockets)."""

from __future__ import annotations

import ast
import json
import types
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from magicwan.emulator import EmulatorState, FaultKind, Faults, PSKRecord, TokenBucket, Tunnel
from magicwan.emulator import bucket as bucket_module
from magicwan.emulator import faults as faults_module
from magicwan.emulator import models as models_module
from magicwan.emulator import seeding as seeding_module
from magicwan.emulator import state as state_module
from magicwan.emulator.faults import FaultInjector
from magicwan.emulator.models import format_timestamp, is_identifier
from tests.support.emulator import FAILURE, PSK_RE, SHARED_SPEC, SPEC_COPY, SUCCESS, TIMESTAMP_RE


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- the spec and how we read it ---------------------------------------------------------------


def test_spec_copy_matches_the_shared_spec() -> None:
    shared = SHARED_SPEC / "psk_generate.openapi.json"
    if not shared.exists():
        pytest.skip("no ../shared/spec beside the repository")
    assert json.loads(shared.read_text()) == json.loads(SPEC_COPY.read_text())


def test_failure_schema_reading_is_not_vacuous() -> None:
    good = {
        "success": False,
        "errors": [{"code": 971, "message": "x"}],
        "messages": [],
        "result": None,
    }
    FAILURE.validate(good)
    for bad in (
        {**good, "errors": []},
        {**good, "success": True},
        {**good, "result": {}},
        {**good, "errors": [{"code": "971", "message": "x"}]},
        {k: v for k, v in good.items() if k != "messages"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            FAILURE.validate(bad)
    with pytest.raises(jsonschema.ValidationError):
        SUCCESS.validate(good)


# -- state ------------------------------------------------------------------------------------


def test_ids_are_cloudflare_shaped_and_reproducible() -> None:
    a, b = EmulatorState(tunnels=5, seed=7), EmulatorState(tunnels=5, seed=7)
    assert a.account_id == b.account_id
    assert a.tunnel_ids == b.tunnel_ids
    assert len(set(a.tunnel_ids)) == 5
    assert all(is_identifier(i) for i in [a.account_id, *a.tunnel_ids])
    assert EmulatorState(tunnels=5, seed=8).tunnel_ids != a.tunnel_ids
    # Giving the account id does not shift the tunnel ids.
    fixed = EmulatorState(tunnels=5, seed=7, account_id="023e105f4ecef8ad9ca31a8372d0c353")
    assert fixed.tunnel_ids == a.tunnel_ids


def test_invalid_ids_are_refused() -> None:
    state = EmulatorState()
    with pytest.raises(ValueError, match="32 lowercase hex"):
        state.add_tunnel(tunnel_id="../etc")
    with pytest.raises(ValueError, match="32 lowercase hex"):
        state.add_account("ABC")


def test_generate_psk_records_history_and_strictly_increasing_timestamps() -> None:
    frozen = datetime(2026, 11, 26, 15, 50, 46, 123456, tzinfo=UTC)
    state = EmulatorState(tunnels=1, utcnow=lambda: frozen)
    tunnel = state.tunnel(state.account_id, state.tunnel_ids[0])
    assert tunnel.psk is None
    assert tunnel.psk_metadata() is None
    records = [state.generate_psk(tunnel) for _ in range(3)]
    assert [r.generation for r in records] == [1, 2, 3]
    assert tunnel.generation == 3
    assert state.current_psk(state.account_id, tunnel.id) == records[-1].psk
    assert state.history(state.account_id, tunnel.id) == records
    assert all(PSK_RE.fullmatch(r.psk) for r in records)
    assert len({r.psk for r in records}) == 3
    stamps = [format_timestamp(r.generated_on) for r in records]
    assert stamps == [
        "2026-11-26T15:50:46.123456Z",
        "2026-11-26T15:50:46.123457Z",
        "2026-11-26T15:50:46.123458Z",
    ]
    assert all(TIMESTAMP_RE.fullmatch(s) for s in stamps)
    assert "psk" not in json.dumps(tunnel.to_api()).replace("psk_metadata", "")
    assert records[0].psk not in repr(records[0])
    assert records[0].psk not in repr(tunnel)


def test_reset_forgets_activity_but_keeps_topology() -> None:
    state = EmulatorState(tunnels=2)
    tunnel = state.tunnel(state.account_id, state.tunnel_ids[0])
    state.generate_psk(tunnel)
    state.record_request("psk_generate", 200)
    ids = state.tunnel_ids
    state.reset()
    assert state.tunnel_ids == ids
    assert tunnel.generation == 0
    assert tunnel.psk is None
    assert tunnel.history == []
    assert state.requests.total == 0
    assert state.total_generations() == 0


def test_snapshot_is_json() -> None:
    state = EmulatorState(tunnels=1)
    state.generate_psk(state.tunnel(state.account_id, state.tunnel_ids[0]))
    snap = json.loads(json.dumps(state.snapshot()))
    entry = snap["accounts"][state.account_id]["tunnels"][state.tunnel_ids[0]]
    assert entry["generation"] == 1
    assert PSK_RE.fullmatch(entry["psk"])


# -- token bucket -----------------------------------------------------------------------------


def test_limiter_starts_full_and_refills_continuously() -> None:
    clock = Clock()
    limiter = TokenBucket(1200, 300, clock=clock)
    decisions = [limiter.acquire("u") for _ in range(1200)]
    assert all(d.allowed for d in decisions)
    assert decisions[0].remaining == 1199
    assert decisions[0].reset == 1
    assert decisions[-1].remaining == 0
    assert decisions[-1].reset == 300
    refused = limiter.acquire("u")
    assert not refused.allowed
    assert refused.retry_after == 1
    clock.now += 0.25
    assert limiter.acquire("u").allowed
    assert limiter.policy_header() == '"default";q=1200;w=300'


@pytest.mark.parametrize(("limit", "window", "n"), [(1200, 300, 1500), (5, 10, 12), (3, 1, 10)])
def test_paced_requests_take_n_minus_l_times_w_over_l(limit: int, window: float, n: int) -> None:
    clock = Clock()
    limiter = TokenBucket(limit, window, clock=clock)
    for _ in range(n):
        decision = limiter.acquire("u")
        while not decision.allowed:
            clock.now += window / limit / 4
            decision = limiter.acquire("u")
    assert clock.now == pytest.approx((n - limit) * window / limit, abs=window / limit / 4)


def test_limiter_refusal_is_not_charged_and_keys_are_separate() -> None:
    clock = Clock()
    limiter = TokenBucket(2, 10, clock=clock)
    assert limiter.acquire("a").allowed
    assert limiter.acquire("a").allowed
    for _ in range(5):
        refused = limiter.acquire("a")
        assert not refused.allowed
        assert refused.retry_after == 5
    assert limiter.acquire("b").allowed
    clock.now += 5
    assert limiter.acquire("a").allowed


# -- faults -----------------------------------------------------------------------------------


def test_faults_validation() -> None:
    assert Faults.none() == Faults()
    assert not Faults().active
    assert Faults(latency=0.1, latency_probability=1).active
    with pytest.raises(ValueError, match="probability"):
        Faults(server_error=1.5)
    with pytest.raises(ValueError, match="sum"):
        Faults(server_error=0.6, html_502=0.6)
    with pytest.raises(ValueError, match=">= 0"):
        Faults(latency=-1)


def test_fault_draws_are_reproducible_and_match_probabilities() -> None:
    faults = Faults(server_error=0.2, reset_after_store=0.3, latency=0.5, latency_probability=0.5)
    a, b = FaultInjector(faults, seed=42), FaultInjector(faults, seed=42)
    draws = [a.draw() for _ in range(4000)]
    assert draws == [b.draw() for _ in range(4000)]
    kinds = [d.kind for d in draws]
    assert kinds.count(FaultKind.SERVER_ERROR) / 4000 == pytest.approx(0.2, abs=0.03)
    assert kinds.count(FaultKind.RESET_AFTER_STORE) / 4000 == pytest.approx(0.3, abs=0.03)
    assert kinds.count(None) / 4000 == pytest.approx(0.5, abs=0.03)
    assert {d.status for d in draws if d.kind is FaultKind.SERVER_ERROR} == {500, 502, 503}
    assert sum(d.delay > 0 for d in draws) / 4000 == pytest.approx(0.5, abs=0.03)
    a.reseed()
    assert [a.draw() for _ in range(50)] == draws[:50]


@pytest.mark.parametrize(
    "module", [models_module, seeding_module, bucket_module, state_module, faults_module]
)
def test_plain_modules_do_not_import_aiohttp(module: types.ModuleType) -> None:
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text())
    imported = {
        name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    }
    assert imported
    assert not any(name.split(".")[0] == "aiohttp" for name in imported)


# -- PSK listeners and set_psk ----------------------------------------------------------------


def test_listeners_hear_every_change_in_order_and_can_be_removed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = EmulatorState(tunnels=2)
    first, second = (state.tunnel(state.account_id, i) for i in state.tunnel_ids)
    heard: list[tuple[str, int, str, str]] = []

    def listener(tunnel: Tunnel, record: PSKRecord) -> None:
        # Called after the change: the tunnel already holds the new PSK.
        assert tunnel.psk == record.psk
        heard.append((tunnel.id, record.generation, record.source, record.psk))

    def broken(tunnel: Tunnel, record: PSKRecord) -> None:
        raise RuntimeError("edge daemon unreachable")

    state.add_psk_listener(broken)
    state.add_psk_listener(listener)
    generated = state.generate_psk(first)
    chosen = "x" * 16
    set_record = state.set_psk(second, chosen)
    assert heard == [
        (first.id, 1, "generated", generated.psk),
        (second.id, 1, "set", chosen),
    ]
    assert set_record.source == "set"
    assert second.psk == chosen
    messages = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert messages == [
        f"emulator: a PSK listener failed for tunnel {t.id}" for t in (first, second)
    ]
    assert generated.psk not in caplog.text
    assert chosen not in caplog.text

    state.reset()  # forgets PSKs, keeps listeners
    state.generate_psk(first)
    assert len(heard) == 3
    state.remove_psk_listener(listener)
    state.remove_psk_listener(broken)
    state.generate_psk(first)
    assert len(heard) == 3
    with pytest.raises(ValueError, match="not in list"):
        state.remove_psk_listener(listener)


@pytest.mark.parametrize("bad", ["x" * 15, "x" * 129, "x" * 15 + " ", "x" * 15 + "é", 42])
def test_set_psk_refuses_a_psk_outside_the_bounds(bad: object) -> None:
    state = EmulatorState(tunnels=1)
    tunnel = state.tunnel(state.account_id, state.tunnel_ids[0])
    assert state.psk_problem(bad) is not None
    with pytest.raises(ValueError, match="16 to 128 printable ASCII") as info:
        state.set_psk(tunnel, bad)  # type: ignore[arg-type]
    assert str(bad) not in str(info.value)
    assert tunnel.generation == 0


def test_psk_bounds_and_batch_are_configurable_and_checked() -> None:
    state = EmulatorState(psk_min_length=4, psk_max_length=8, max_psk_batch=2)
    assert state.psk_problem("abcd") is None
    assert state.psk_problem("abcdefghi") is not None
    for bad in (
        {"psk_min_length": 0},
        {"psk_min_length": 10, "psk_max_length": 9},
        {"max_psk_batch": 0},
        {"max_psk_batch": True},
    ):
        with pytest.raises(ValueError, match="whole number"):
            EmulatorState(**bad)


def test_ipsec_tunnel_objects_carry_the_documented_fields() -> None:
    state = EmulatorState(tunnels=4, account_id="023e105f4ecef8ad9ca31a8372d0c353")
    plain, bgp, custom, bgp2 = (
        state.tunnel(state.account_id, i).to_api() for i in state.tunnel_ids
    )
    assert (
        plain["ipsec_id"] == f"{plain['id']}.023e105f4ecef8ad9ca31a8372d0c353.ipsec.cloudflare.com"
    )
    assert plain["interface_address"] == "10.0.0.0/31"
    assert plain["interface_address6"] == "2001:db8:4d57::/127"
    assert plain["automatic_return_routing"] is False
    assert "bgp" not in plain
    assert "custom_remote_identities" not in plain
    assert bgp["bgp"] == {"customer_asn": 64513, "extra_prefixes": []}
    assert bgp["bgp_status"]["state"] == "BGP_UP"
    assert bgp["bgp_status"]["cf_speaker_ip"] == "10.0.0.2"
    assert bgp["bgp_status"]["customer_speaker_ip"] == "10.0.0.3"
    assert custom["custom_remote_identities"] == {
        "fqdn_id": "site00003.023e105f4ecef8ad9ca31a8372d0c353.custom.ipsec.cloudflare.com"
    }
    assert "bgp" in bgp2
    assert "bgp" not in custom
