"""``POST /accounts/{a}/magic/ipsec_tunnels/psk``: the bulk PSK set, over real sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
import pytest_asyncio

from magicwan.emulator import Emulator, FaultKind, Faults, PSKRecord, Tunnel, run
from tests.support.emulator import (
    FAILURE,
    PSK_SET,
    RAY_RE,
    a_psk,
    assert_failure,
    call,
    generate,
    key_headers,
    psk_set_url,
    set_psks,
    token_headers,
    tunnels_url,
)

pytestmark = pytest.mark.asyncio

UNKNOWN = "0" * 32
DISCONNECTED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


@pytest_asyncio.fixture
async def small() -> AsyncIterator[Emulator]:
    """Two tunnels, at most 3 PSKs per request, PSKs of 20..40 characters."""
    async with run(
        tunnels=2, rate_limit=None, max_psk_batch=3, psk_min_length=20, psk_max_length=40
    ) as emulator:
        yield emulator


async def test_set_applies_every_psk_and_answers_in_the_envelope(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    first, second = emu.tunnel_ids[:2]
    psks = {first: a_psk("one-"), second: a_psk("two-")}
    entries = [{"id": tunnel_id, "psk": psk} for tunnel_id, psk in psks.items()]

    status, headers, body = await set_psks(session, emu, entries)

    assert status == 200
    PSK_SET.validate(body)
    assert RAY_RE.fullmatch(headers["cf-ray"])
    assert headers["Ratelimit"] == '"default";r=1199;t=1'  # one request, one token
    result = body["result"]
    assert result["unapplied_psks"] == {}
    assert set(result["successfully_applied_psks"]) == set(psks)
    for tunnel_id, psk in psks.items():
        applied = result["successfully_applied_psks"][tunnel_id]
        tunnel = emu.state.tunnel(emu.account_id, tunnel_id)
        assert applied["ipsec_tunnel_id"] == tunnel_id
        assert applied["ipsec_id"] == f"{tunnel_id}.{emu.account_id}.ipsec.cloudflare.com"
        assert applied["psk"] == psk
        assert applied["psk_metadata"] == tunnel.psk_metadata()
        assert emu.state.current_psk(emu.account_id, tunnel_id) == psk
        [record] = emu.state.history(emu.account_id, tunnel_id)
        assert (record.source, record.generation) == ("set", 1)
    assert emu.state.tunnel(emu.account_id, emu.tunnel_ids[2]).generation == 0
    assert emu.state.requests.by_route == {"psk_set": 1}
    # The GET answers never show it.
    _, _, listing = await call(session, "GET", tunnels_url(emu), headers=token_headers(emu))
    assert psks[first] not in json.dumps(listing)


async def test_unknown_foreign_and_duplicate_ids_are_unapplied(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    other = emu.state.add_account()
    foreign = emu.state.add_tunnel(other.id).id
    good, duplicated = emu.tunnel_ids[:2]
    psk = a_psk()
    entries = [
        {"id": good, "psk": psk},
        {"id": UNKNOWN, "psk": a_psk()},
        {"id": foreign, "psk": a_psk()},
        {"id": duplicated, "psk": a_psk()},
        {"id": duplicated, "psk": a_psk()},
        {"id": "not-an-id", "psk": a_psk()},
    ]

    status, _, body = await set_psks(session, emu, entries, headers=key_headers(emu))

    assert status == 200
    PSK_SET.validate(body)
    result = body["result"]
    assert list(result["successfully_applied_psks"]) == [good]
    assert result["unapplied_psks"] == {
        UNKNOWN: "ipsec_tunnel not found",
        foreign: "ipsec_tunnel not found",
        duplicated: "duplicate tunnel id in this request: none of its PSKs was applied",
        "not-an-id": "ipsec_tunnel not found",
    }
    assert emu.state.current_psk(emu.account_id, good) == psk
    assert emu.state.tunnel(emu.account_id, duplicated).generation == 0
    assert emu.state.tunnel(other.id, foreign).generation == 0


async def test_validate_only_applies_nothing_and_shows_what_would_be(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    tunnel_id = emu.tunnel_ids[0]
    _, _, generated = await generate(session, emu, tunnel_id)
    before = emu.state.current_psk(emu.account_id, tunnel_id)
    psk = a_psk()

    status, _, body = await set_psks(
        session,
        emu,
        [{"id": tunnel_id, "psk": psk}, {"id": UNKNOWN, "psk": a_psk()}],
        params={"validate_only": "true"},
    )

    assert status == 200
    PSK_SET.validate(body)
    would = body["result"]["successfully_applied_psks"][tunnel_id]
    assert would["psk"] == psk
    previous = generated["result"]["psk_metadata"]["last_generated_on"]
    assert would["psk_metadata"]["last_generated_on"] > previous
    assert body["result"]["unapplied_psks"] == {UNKNOWN: "ipsec_tunnel not found"}
    assert emu.state.current_psk(emu.account_id, tunnel_id) == before
    assert emu.state.tunnel(emu.account_id, tunnel_id).generation == 1

    status, _, body = await set_psks(
        session, emu, [{"id": tunnel_id, "psk": psk}], params={"validate_only": "yes"}
    )
    assert status == 400
    assert_failure(body, 1003)


BAD_BODIES: list[tuple[str, object]] = [
    ("not json", b"{oops"),
    ("a list", []),
    ("no psks", {}),
    ("psks not a list", {"psks": "x"}),
    ("no entries", {"psks": []}),
    ("entry not an object", {"psks": ["x"]}),
    ("id not a string", {"psks": [{"id": 5, "psk": "p" * 32}]}),
    ("psk missing", {"psks": [{"id": "{tunnel}"}]}),
    ("psk not a string", {"psks": [{"id": "{tunnel}", "psk": 12345678901234567890}]}),
    ("psk too short", {"psks": [{"id": "{tunnel}", "psk": "p" * 19}]}),
    ("psk too long", {"psks": [{"id": "{tunnel}", "psk": "p" * 41}]}),
    ("psk with a space", {"psks": [{"id": "{tunnel}", "psk": "p" * 10 + " " + "p" * 10}]}),
    ("psk not ASCII", {"psks": [{"id": "{tunnel}", "psk": "p" * 20 + "é"}]}),
    ("psk with a control", {"psks": [{"id": "{tunnel}", "psk": "p" * 20 + "\n"}]}),
]


@pytest.mark.parametrize(("case", "payload"), BAD_BODIES, ids=[c for c, _ in BAD_BODIES])
async def test_malformed_bodies_and_bad_psks_are_400_code_1004(
    small: Emulator, session: aiohttp.ClientSession, case: str, payload: object
) -> None:
    data = payload if isinstance(payload, bytes) else b""
    if not isinstance(payload, bytes):
        body = json.loads(json.dumps(payload).replace("{tunnel}", small.tunnel_ids[1]))
        if isinstance(body, dict) and isinstance(body.get("psks"), list) and body["psks"]:
            body["psks"].insert(0, {"id": small.tunnel_ids[0], "psk": a_psk()})  # a good one
        data = json.dumps(body).encode()
    headers = {**token_headers(small), "Content-Type": "application/json"}

    status, _, body = await set_psks(session, small, None, data=data, headers=headers)

    assert status == 400, case
    assert_failure(body, 1004)
    assert small.state.total_generations() == 0  # all or nothing: the good entry waits too
    assert "p" * 19 not in body["errors"][0]["message"]  # never quotes a PSK


async def test_the_bad_psk_message_names_the_entry_and_the_bounds(
    small: Emulator, session: aiohttp.ClientSession
) -> None:
    entries = [{"id": small.tunnel_ids[0], "psk": a_psk()}, {"id": UNKNOWN, "psk": "short"}]
    status, _, body = await set_psks(session, small, entries)
    assert status == 400
    assert_failure(
        body,
        1004,
        "psks[1].psk: a PSK must be 20 to 40 printable ASCII characters without spaces (0x21-0x7e)",
    )


async def test_content_type_must_be_json(emu: Emulator, session: aiohttp.ClientSession) -> None:
    headers = {**token_headers(emu), "Content-Type": "text/plain"}
    status, _, body = await set_psks(session, emu, None, data=b'{"psks": []}', headers=headers)
    assert status == 400
    assert_failure(body, 1004, "Content-Type must be application/json")


async def test_more_than_the_batch_maximum_is_400_code_1005(
    small: Emulator, session: aiohttp.ClientSession
) -> None:
    entries = [{"id": small.tunnel_ids[i % 2], "psk": a_psk()} for i in range(4)]
    status, _, body = await set_psks(session, small, entries)
    assert status == 400
    assert_failure(body, 1005, "too many psks in one request (max 3)")
    assert small.state.total_generations() == 0

    status, _, body = await set_psks(session, small, entries[:3])  # the maximum is fine
    assert status == 200
    PSK_SET.validate(body)


async def test_the_defaults_are_16_to_128_characters_and_1000_entries(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    tunnel_id = emu.tunnel_ids[0]
    for psk in ("!" * 16, "~" * 128):
        status, _, _ = await set_psks(session, emu, [{"id": tunnel_id, "psk": psk}])
        assert status == 200
        assert emu.state.current_psk(emu.account_id, tunnel_id) == psk
    for psk in ("x" * 15, "x" * 129):
        status, _, body = await set_psks(session, emu, [{"id": tunnel_id, "psk": psk}])
        assert status == 400
        assert_failure(body, 1004)
    many = [{"id": UNKNOWN, "psk": a_psk()}] * 1001
    status, _, body = await set_psks(session, emu, many)
    assert status == 400
    assert_failure(body, 1005, "too many psks in one request (max 1000)")


async def test_timestamps_strictly_increase_per_tunnel_across_generate_and_set() -> None:
    frozen = datetime(2026, 11, 26, 15, 50, 46, 123456, tzinfo=UTC)
    async with (
        run(tunnels=1, rate_limit=None, utcnow=lambda: frozen) as emu,
        aiohttp.ClientSession() as session,
    ):
        tunnel_id = emu.tunnel_ids[0]
        _, _, generated = await generate(session, emu)
        stamps = [generated["result"]["psk_metadata"]["last_generated_on"]]
        for _ in range(2):
            _, _, body = await set_psks(session, emu, [{"id": tunnel_id, "psk": a_psk()}])
            applied = body["result"]["successfully_applied_psks"][tunnel_id]
            stamps.append(applied["psk_metadata"]["last_generated_on"])
    assert stamps == [
        "2026-11-26T15:50:46.123456Z",
        "2026-11-26T15:50:46.123457Z",
        "2026-11-26T15:50:46.123458Z",
    ]


async def test_listeners_hear_every_set_psk_and_a_failing_one_breaks_nothing(
    emu: Emulator, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[tuple[str, str, str]] = []

    def listener(tunnel: Tunnel, record: PSKRecord) -> None:
        heard.append((tunnel.id, record.psk, record.source))

    def broken(tunnel: Tunnel, record: PSKRecord) -> None:
        raise RuntimeError("the edge is down")

    emu.state.add_psk_listener(broken)
    emu.state.add_psk_listener(listener)
    psks = {tunnel_id: a_psk() for tunnel_id in emu.tunnel_ids[:2]}

    status, _, _ = await set_psks(session, emu, [{"id": k, "psk": v} for k, v in psks.items()])

    assert status == 200
    assert heard == [(k, v, "set") for k, v in psks.items()]
    failures = [r for r in caplog.records if "PSK listener failed" in r.getMessage()]
    assert len(failures) == 2
    for record in failures:
        assert all(psk not in record.getMessage() for psk in psks.values())


#: What each fault does to a bulk set: (the change is applied, what the client gets).
FAULT_OUTCOMES: dict[FaultKind, tuple[bool, str]] = {
    FaultKind.SERVER_ERROR: (False, "5xx"),
    FaultKind.RATE_LIMITED: (False, "429"),
    FaultKind.RESET_BEFORE_STORE: (False, "reset"),
    FaultKind.RESET_AFTER_STORE: (True, "reset"),
    FaultKind.HTML_502: (False, "html"),
    FaultKind.TRUNCATED_JSON: (True, "truncated"),
    FaultKind.LATE_STORE: (True, "200"),  # the client here waits longer than the delay
}


async def test_every_fault_kind_has_an_expected_outcome() -> None:
    assert set(FAULT_OUTCOMES) == set(FaultKind)


@pytest.mark.parametrize("kind", list(FaultKind), ids=lambda k: k.value)
async def test_faults_apply_to_the_bulk_set(
    emu: Emulator, session: aiohttp.ClientSession, kind: FaultKind
) -> None:
    applied, seen = FAULT_OUTCOMES[kind]
    emu.set_faults(Faults(**{kind.value: 1.0}, late_store_delay=0.05))
    tunnel_id = emu.tunnel_ids[0]
    psk = a_psk()
    try:
        async with session.post(
            psk_set_url(emu),
            json={"psks": [{"id": tunnel_id, "psk": psk}]},
            headers=token_headers(emu),
        ) as resp:
            raw = await resp.read()
            status, content_type = resp.status, resp.content_type
    except DISCONNECTED:
        got = "reset"
    else:
        if status >= 500 and content_type == "application/json":
            got = "5xx"
            FAILURE.validate(json.loads(raw))
        elif status == 502:
            got = "html"
        elif status == 429:
            got = "429"
        elif kind is FaultKind.TRUNCATED_JSON:
            got = "truncated"
            assert status == 200
            assert raw.startswith(b'{"result":{"successfully_applied_psks":')
            with pytest.raises(json.JSONDecodeError):
                json.loads(raw)
        else:
            got = str(status)
            PSK_SET.validate(json.loads(raw))
    assert got == seen
    assert (emu.state.current_psk(emu.account_id, tunnel_id) == psk) is applied
    assert emu.state.requests.faults == {kind.value: 1}
    assert emu.state.requests.by_route == {"psk_set": 1}


async def test_get_on_the_psk_path_is_an_unknown_tunnel(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    status, _, body = await call(session, "GET", psk_set_url(emu), headers=token_headers(emu))
    assert status == 404
    assert_failure(body, 1002, "ipsec_tunnel not found")


async def test_unknown_account_and_auth(emu: Emulator, session: aiohttp.ClientSession) -> None:
    entries = [{"id": emu.tunnel_ids[0], "psk": a_psk()}]
    status, _, body = await call(
        session,
        "POST",
        psk_set_url(emu, UNKNOWN),
        json={"psks": entries},
        headers=token_headers(emu),
    )
    assert status == 404
    assert_failure(body, 7003)
    status, _, body = await call(session, "POST", psk_set_url(emu), json={"psks": entries})
    assert status == 400
    assert_failure(body, 9106)
    assert emu.state.total_generations() == 0
