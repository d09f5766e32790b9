"""magicwan.delivery.StrongSwan without a daemon: identities, the wire format, and failures.

A small fake charon answers on a unix socket, speaking VICI with the ``vici`` package's
own encoder; the real daemons are in ``tests/strongswan/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.leaks import shown_in
from tests.support.strongswan import require_vici

require_vici()

from vici.protocol import FiniteStream, Message  # type: ignore[import-untyped]  # noqa: E402

from magicwan import InvalidInputError, IPsecTunnel  # noqa: E402
from magicwan.delivery import (  # noqa: E402
    FIELDS,
    Checkable,
    Delivery,
    DeliveryError,
    DeliveryTarget,
    StrongSwan,
)
from magicwan.delivery._vici import Secret  # noqa: E402  # private: the secret StrongSwan loads, checked as charon gets it

PSK = "O3bwKSjnaoCxDoUxjcq4Rk8ZKkezQUiy"
ACCOUNT = "023e105f4ecef8ad9ca31a8372d0c353"
IPSEC_ID = f"c4a7362d577a6c3019a474fd6f485823.{ACCOUNT}.ipsec.cloudflare.com"
TUNNEL = IPsecTunnel(
    id="c4a7362d577a6c3019a474fd6f485823",
    name="branch-1",
    cloudflare_endpoint="162.159.0.1",
    customer_endpoint="203.0.113.7",
    ipsec_id=IPSEC_ID,
)
DELIVERY = Delivery(account_id=ACCOUNT, tunnel_id=TUNNEL.id, psk=PSK, tunnel=TUNNEL)

#: Answers of the fake charon besides a message dict.
HANG = "hang"
CLOSE = "close"
UNKNOWN = "unknown"  # answer CMD_UNKNOWN, as for a command charon does not know

Answer = Callable[[str, dict[str, Any]], Any]


class Streamed:
    """An answer that streams ``events`` (named ``event``) before the final ``answer``."""

    def __init__(self, event: str, events: list[dict[str, Any]], answer: dict[str, Any]) -> None:
        self.event = event
        self.events = events
        self.answer = answer


def ok(name: str, message: dict[str, Any]) -> dict[str, str]:
    return {"success": "yes"}


class FakeCharon:
    """A VICI server that records each command and answers as ``answer`` says."""

    def __init__(self, path: Path, answer: Answer) -> None:
        self.path = path
        self.answer = answer
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.connections = 0
        self.open = 0
        self.peak = 0
        self.release = asyncio.Event()
        self.handlers: set[asyncio.Task[Any]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.connections += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            await self._serve(reader, writer)
        finally:
            self.open -= 1
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                (length,) = struct.unpack("!I", await reader.readexactly(4))
                payload = await reader.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            kind = payload[0]
            if kind in (3, 4):  # (un)register for events
                reply = bytes([5])
            else:
                name = payload[2 : 2 + payload[1]].decode()
                message = dict(Message.deserialize(FiniteStream(payload[2 + payload[1] :])))
                self.requests.append((name, message))
                answer = self.answer(name, message)
                if answer == HANG and not await self._released(reader):
                    return
                if answer == HANG:
                    answer = {"success": "yes"}
                if answer == CLOSE:
                    return
                if isinstance(answer, Streamed):
                    name_bytes = answer.event.encode()
                    for event in answer.events:
                        packet = bytes([7, len(name_bytes)]) + name_bytes + Message.serialize(event)
                        writer.write(struct.pack("!I", len(packet)) + packet)
                    answer = answer.answer
                reply = bytes([2]) if answer == UNKNOWN else bytes([1]) + Message.serialize(answer)
            writer.write(struct.pack("!I", len(reply)) + reply)
            await writer.drain()

    async def _released(self, reader: asyncio.StreamReader) -> bool:
        """Wait for :attr:`release`; False if the client hangs up first."""
        hangup = asyncio.ensure_future(reader.read(1))
        release = asyncio.ensure_future(self.release.wait())
        await asyncio.wait([hangup, release], return_when=asyncio.FIRST_COMPLETED)
        for waiter in (hangup, release):
            waiter.cancel()
        return release.done() and not release.cancelled()


@contextlib.asynccontextmanager
async def fake_charon(tmp_path: Path, answer: Answer = ok) -> AsyncIterator[FakeCharon]:
    fake = FakeCharon(tmp_path / "charon.vici", answer)
    server = await asyncio.start_unix_server(fake.serve, path=str(fake.path))
    try:
        yield fake
    finally:
        fake.release.set()
        server.close()
        await asyncio.gather(*fake.handlers, return_exceptions=True)
        await server.wait_closed()


@pytest_asyncio.fixture
async def charon(tmp_path: Path) -> AsyncIterator[FakeCharon]:
    async with fake_charon(tmp_path) as fake:
        yield fake


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory for sockets (a unix socket path may not exceed 107 bytes)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mw-") as name:
        yield Path(name)


# -- what is sent ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_key_is_loaded_with_an_id_and_both_identities(charon: FakeCharon) -> None:
    await StrongSwan(str(charon.path))(DELIVERY)
    assert charon.requests == [
        (
            "load-shared",
            {
                "id": f"magicwan-{TUNNEL.id}".encode(),
                "type": b"IKE",
                "data": PSK.encode(),
                "owners": [IPSEC_ID.encode(), b"162.159.0.1"],
            },
        )
    ]


@pytest.mark.asyncio
async def test_a_new_key_for_the_same_tunnel_reuses_the_id(charon: FakeCharon) -> None:
    deliverer = StrongSwan(str(charon.path))
    await deliverer(DELIVERY)
    await deliverer(Delivery(account_id=ACCOUNT, tunnel_id=TUNNEL.id, psk="N" * 32, tunnel=TUNNEL))
    ids = [message["id"] for _, message in charon.requests]
    assert ids == [f"magicwan-{TUNNEL.id}".encode()] * 2
    assert [message["data"] for _, message in charon.requests] == [PSK.encode(), b"N" * 32]


@pytest.mark.asyncio
async def test_identities_and_ids_can_be_overridden(charon: FakeCharon) -> None:
    deliverer = StrongSwan(
        str(charon.path),
        local_id=lambda d: f"router@{d.name}",
        remote_id=None,
        shared_id="ike-{name}",
    )
    await deliverer(DELIVERY)
    (_, message) = charon.requests[0]
    assert message["owners"] == [b"router@branch-1"]
    assert message["id"] == b"ike-branch-1"


def test_plan_derives_everything_before_any_io() -> None:
    plan = StrongSwan("/nonexistent", reauth=True, remote_id="{customer_endpoint}").plan(DELIVERY)
    assert plan.owners == (IPSEC_ID, "203.0.113.7")
    assert plan.connection == "branch-1"
    assert plan.shared_id == f"magicwan-{TUNNEL.id}"
    assert StrongSwan("/nonexistent").plan(DELIVERY).connection is None
    assert PSK not in repr(plan)


@pytest.mark.asyncio
async def test_an_unknown_fact_fails_before_anything_is_sent(charon: FakeCharon) -> None:
    bare = Delivery(account_id=ACCOUNT, tunnel_id="t1", psk=PSK, ipsec_id="t1.example")
    with pytest.raises(DeliveryError) as caught:
        await StrongSwan(str(charon.path))(bare)
    assert caught.value.reason == "misconfigured"
    assert "remote identity (needs cloudflare_endpoint) is unknown" in str(caught.value)
    nameless = Delivery(account_id=ACCOUNT, tunnel_id="t1", psk=PSK, ipsec_id="t1.example")
    with pytest.raises(DeliveryError, match="connection name"):
        await StrongSwan(str(charon.path), remote_id=None, reauth=True)(nameless)
    with pytest.raises(DeliveryError, match="local identity"):
        await StrongSwan(str(charon.path), local_id=lambda d: None)(DELIVERY)
    assert charon.requests == []


def test_format_strings_may_only_use_the_delivery_fields() -> None:
    with pytest.raises(ValueError, match="psk"):
        StrongSwan(local_id="{psk}")
    with pytest.raises(ValueError, match="tunnel"):
        StrongSwan(connection="{tunnel.name}")
    with pytest.raises(TypeError):
        StrongSwan(local_id=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        StrongSwan(shared_id=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        StrongSwan(timeout=0)
    with pytest.raises(ValueError, match="max_concurrency"):
        StrongSwan(max_concurrency=0)
    assert "psk" not in FIELDS
    assert repr(StrongSwan("/run/x.vici")) == "StrongSwan(socket='/run/x.vici', reauth=False)"


def test_without_vici_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vici", None)
    with pytest.raises(ImportError, match=r"magicwan\[strongswan\]"):
        StrongSwan()


def test_a_secret_in_a_vici_message_prints_redacted() -> None:
    message = {"data": Secret(PSK)}
    assert PSK not in repr(message)
    assert str(message["data"]) == PSK
    assert Message.serialize(message).endswith(PSK.encode())


# -- failures ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_no_socket_means_charon_is_not_running(short_tmp: Path) -> None:
    path = short_tmp / "charon.vici"
    with pytest.raises(DeliveryError) as caught:
        await StrongSwan(str(path))(DELIVERY)
    assert caught.value.reason == "unreachable"
    assert str(path) in str(caught.value)
    assert "is charon running?" in str(caught.value)


@pytest.mark.asyncio
async def test_a_socket_nobody_listens_on_is_refused(short_tmp: Path) -> None:
    path = short_tmp / "stale.vici"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # bound, never listening: what a dead charon leaves behind
        with pytest.raises(DeliveryError) as caught:
            await StrongSwan(str(path))(DELIVERY)
    assert caught.value.reason == "unreachable"
    assert "Connection refused" in str(caught.value)


@pytest.mark.asyncio
async def test_a_socket_whose_backlog_stays_full_times_out(short_tmp: Path) -> None:
    # charon accepts nothing while its workers are busy: the backlog fills, connect() says
    # EAGAIN at once. That is retried until the deadline, then reported as a timeout.
    path = short_tmp / "busy.vici"
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket(socket.AF_UNIX))
        listener.bind(str(path))
        listener.listen(0)
        while True:  # fill the backlog
            queued = stack.enter_context(socket.socket(socket.AF_UNIX))
            queued.setblocking(False)
            try:
                queued.connect(str(path))
            except BlockingIOError:
                break
        with pytest.raises(DeliveryError) as caught:
            await StrongSwan(str(path), timeout=0.3)(DELIVERY)
    assert caught.value.reason == "timeout"
    assert "accepted no connection in time" in str(caught.value)


@pytest.mark.asyncio
async def test_a_charon_that_never_answers_times_out(tmp_path: Path) -> None:
    async with fake_charon(tmp_path, lambda name, message: HANG) as fake:
        with pytest.raises(DeliveryError) as caught:
            await StrongSwan(str(fake.path), timeout=0.3)(DELIVERY)
    assert caught.value.reason == "timeout"
    assert [name for name, _ in fake.requests] == ["load-shared"]
    assert shown_in(PSK, caught.value) == []


@pytest.mark.asyncio
async def test_a_thread_stuck_past_its_deadline_is_abandoned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    import magicwan.delivery._strongswan as strongswan

    released = threading.Event()
    aborted: list[bool] = []

    def stuck(steps: Any, channel: Any, plan: Any, secret: Any, deadline: float) -> None:
        released.wait(10)
        aborted.append(channel._aborted)

    monkeypatch.setattr(strongswan, "_in_thread", stuck)
    monkeypatch.setattr(strongswan, "_BACKSTOP", 0.05)
    with pytest.raises(DeliveryError) as caught:
        await StrongSwan("/nonexistent.vici", timeout=0.1)(DELIVERY)
    released.set()
    assert caught.value.reason == "timeout"
    assert "did not answer within 0.1s" in str(caught.value)
    for _ in range(100):
        if aborted:
            break
        await asyncio.sleep(0.01)
    assert aborted == [True]  # its socket was shut down, so a real call would fail at once


@pytest.mark.asyncio
async def test_charons_error_text_is_scrubbed(tmp_path: Path) -> None:
    def refuse(name: str, message: dict[str, Any]) -> dict[str, Any]:
        secret = message["data"].decode()
        return {"success": "no", "errmsg": f"loading shared key {secret} failed\x1b[2J"}

    async with fake_charon(tmp_path, refuse) as fake:
        with pytest.raises(DeliveryError) as caught:
            await StrongSwan(str(fake.path))(DELIVERY)
    assert caught.value.reason == "rejected"
    assert "loading shared key [REDACTED] failed\\x1b[2J" in str(caught.value)
    assert shown_in(PSK, caught.value) == []


@pytest.mark.asyncio
async def test_a_connection_lost_mid_request_leaks_nothing(tmp_path: Path) -> None:
    # vici's frames hold the serialized request, PSK included, when the socket fails.
    async with fake_charon(tmp_path, lambda name, message: CLOSE) as fake:
        with pytest.raises(DeliveryError) as caught:
            await StrongSwan(str(fake.path))(DELIVERY)
    assert caught.value.reason == "unreachable"
    assert "Connection closed" in str(caught.value)
    assert caught.value.__context__ is None
    assert caught.value.__cause__ is None
    assert shown_in(PSK, caught.value) == []


@pytest.mark.asyncio
async def test_an_answer_that_is_not_vici_is_a_clear_error(tmp_path: Path) -> None:
    async with fake_charon(tmp_path, lambda name, message: UNKNOWN) as fake:
        with pytest.raises(DeliveryError) as caught:
            await StrongSwan(str(fake.path))(DELIVERY)
    assert caught.value.reason == "rejected"
    assert "unexpected answer from charon (SessionException)" in str(caught.value)
    assert shown_in(PSK, caught.value) == []


@pytest.mark.asyncio
async def test_cancelling_a_delivery_unblocks_its_thread(tmp_path: Path) -> None:
    async with fake_charon(tmp_path, lambda name, message: HANG) as fake:
        task = asyncio.ensure_future(StrongSwan(str(fake.path))(DELIVERY))
        while not fake.requests:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):  # the aborted socket closes the fake's side, too
            if fake.open == 0:
                break
            await asyncio.sleep(0.01)
        assert fake.open == 0


@pytest.mark.asyncio
async def test_at_most_max_concurrency_deliveries_talk_to_charon(tmp_path: Path) -> None:
    async with fake_charon(tmp_path, lambda name, message: HANG) as fake:
        deliverer = StrongSwan(str(fake.path), max_concurrency=2)
        tasks = [
            asyncio.ensure_future(
                deliverer(Delivery(account_id=ACCOUNT, tunnel_id=f"t{i}", psk=PSK, tunnel=TUNNEL))
            )
            for i in range(5)
        ]
        while len(fake.requests) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # room for a third, which must not come
        assert (fake.connections, fake.open) == (2, 2)
        fake.release.set()
        await asyncio.gather(*tasks)
    assert fake.peak == 2
    assert len(fake.requests) == 5


# -- templates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "shown"),
    [
        ("{psk}", "{psk}"),
        ("cf-{nam}", "{nam}"),
        ("{}", "{}"),
        ("{0}", "{0}"),
        ("{name.upper}", "{name.upper}"),
        ("{name[0]}", "{name[0]}"),
        ("{name:{psk}}", "{psk}"),
    ],
)
def test_an_unknown_placeholder_is_refused_at_construction(template: str, shown: str) -> None:
    for option in ("connection", "local_id", "remote_id", "shared_id"):
        with pytest.raises(InvalidInputError) as caught:
            StrongSwan(**{option: template})  # type: ignore[arg-type]
        message = str(caught.value)
        assert f"{option} template {template!r} uses the unknown placeholder {shown}" in message
        assert "{customer_endpoint}" in message
        assert "{tunnel_id}" in message
        assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("template", ["{name", "name}", "{name!x}", "{tunnel_id:d}"])
def test_a_malformed_template_is_refused_at_construction(template: str) -> None:
    with pytest.raises(InvalidInputError, match="connection template"):
        StrongSwan(connection=template)


@pytest.mark.parametrize(
    ("options", "owners", "connection"),
    [
        ({}, (IPSEC_ID, "162.159.0.1"), "branch-1"),
        ({"connection": "{ipsec_id}"}, (IPSEC_ID, "162.159.0.1"), IPSEC_ID),
        ({"connection": "cf-{tunnel_id}"}, (IPSEC_ID, "162.159.0.1"), f"cf-{TUNNEL.id}"),
        ({"connection": "{{{name}}}"}, (IPSEC_ID, "162.159.0.1"), "{branch-1}"),
        (
            {"local_id": "{customer_endpoint}", "remote_id": "{ipsec_id}"},
            ("203.0.113.7", IPSEC_ID),
            "branch-1",
        ),
        ({"local_id": "router@{name}", "remote_id": None}, ("router@branch-1",), "branch-1"),
    ],
)
def test_templates_fill_in_the_tunnels_facts(
    options: dict[str, Any], owners: tuple[str, ...], connection: str
) -> None:
    plan = StrongSwan(reauth=True, **options).plan(DELIVERY)
    assert (plan.owners, plan.connection) == (owners, connection)


# -- check -----------------------------------------------------------------------------------

TARGET = DeliveryTarget(account_id=ACCOUNT, tunnel_id=TUNNEL.id, tunnel=TUNNEL)


def conns(*names: str) -> Answer:
    def answer(name: str, message: dict[str, Any]) -> Any:
        if name != "list-conns":
            return {"success": "no", "errmsg": f"unexpected {name}"}
        wanted = message["ike"].decode()
        found = [{n: {"local_addrs": ["%any"]}} for n in names if n == wanted]
        return Streamed("list-conn", found, {})

    return answer


@pytest.mark.asyncio
async def test_check_asks_charon_for_the_connection_and_sends_no_key(tmp_path: Path) -> None:
    async with fake_charon(tmp_path, conns("branch-1")) as fake:
        deliverer = StrongSwan(str(fake.path))  # without reauth, too
        assert isinstance(deliverer, Checkable)
        await deliverer.check(TARGET)
        await deliverer.check(DELIVERY)  # a Delivery is a target; its PSK is not sent
    assert fake.requests == [("list-conns", {"ike": b"branch-1"})] * 2


@pytest.mark.asyncio
async def test_check_of_a_missing_connection_names_swanctl_list_conns(tmp_path: Path) -> None:
    async with fake_charon(tmp_path, conns("branch-1")) as fake:
        with pytest.raises(DeliveryError) as caught:
            await StrongSwan(str(fake.path), connection="cf-{tunnel_id}").check(TARGET)
    error = caught.value
    assert (error.reason, error.permanent, error.tunnel_id) == ("misconfigured", True, TUNNEL.id)
    assert f"connection 'cf-{TUNNEL.id}'" in str(error)
    assert "'swanctl --list-conns' lists the connections charon has loaded" in str(error)
    assert [name for name, _ in fake.requests] == ["list-conns"]


@pytest.mark.asyncio
async def test_check_of_an_unknown_fact_fails_before_anything_is_sent(charon: FakeCharon) -> None:
    bare = DeliveryTarget(account_id=ACCOUNT, tunnel_id="t1", ipsec_id="t1.example")
    with pytest.raises(DeliveryError) as caught:
        await StrongSwan(str(charon.path), remote_id=None).check(bare)
    assert (caught.value.reason, caught.value.permanent) == ("misconfigured", True)
    assert "connection name (needs name) is unknown" in str(caught.value)
    assert charon.requests == []


@pytest.mark.asyncio
async def test_check_of_a_charon_that_is_not_running_may_be_retried(short_tmp: Path) -> None:
    with pytest.raises(DeliveryError) as caught:
        await StrongSwan(str(short_tmp / "none.vici")).check(TARGET)
    assert (caught.value.reason, caught.value.permanent) == ("unreachable", False)
    assert "is charon running?" in str(caught.value)


@pytest.mark.asyncio
async def test_a_delivery_to_a_missing_connection_is_permanent_with_the_hint(
    tmp_path: Path,
) -> None:
    def answer(name: str, message: dict[str, Any]) -> Any:
        if name == "initiate":
            return {"success": "no", "errmsg": "IKE_SA config 'branch-1' not found"}
        if name == "list-sas":
            return Streamed("list-sa", [], {})
        return {"success": "yes"}

    async with fake_charon(tmp_path, answer) as fake:
        with pytest.raises(DeliveryError) as caught:
            await StrongSwan(str(fake.path), reauth=True)(DELIVERY)
    assert (caught.value.reason, caught.value.permanent) == ("misconfigured", True)
    assert "IKE_SA config 'branch-1' not found" in str(caught.value)
    assert "'swanctl --list-conns'" in str(caught.value)
    assert shown_in(PSK, caught.value) == []
