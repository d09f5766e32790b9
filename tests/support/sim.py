"""A deterministic simulated world for the rotation engine (FoundationDB-style simulation).

Everything here runs on one thread, in virtual time, from one seed:

``SimClock`` / ``VirtualLoop``
    An asyncio event loop whose ``time()`` is virtual: when nothing is ready it jumps to the
    next timer (its own, or a world event's such as a late store) instead of sleeping. A loop
    with nothing ready, no timer and no world event is a deadlock (:class:`SimDeadlock`).
    ``asyncio.sleep`` and ``asyncio.timeout`` run on it unchanged. A hook runs after every
    loop iteration: the invariant is checked there.

``SimCloudflare``
    An in-memory Cloudflare behind the three callables :func:`magicwan.rotate` takes
    (``generate``, ``set_psks``, ``read_back``), with the client's retry loop (the transport's
    own ``should_retry`` decision) and seeded faults: 5xx before or after the store, 429 with
    Retry-After, a reset before or after the store, a truncated or HTML answer, a timeout whose
    request the server stores some seconds later, a set answer applying another PSK, missing a
    tunnel or refusing one, 413 on a batch too large. Generate answers carry microsecond stamps,
    a GET whole seconds (as Cloudflare's do).

``SimDeliverer``
    A deliverer that succeeds, fails, hangs or succeeds late (the router takes the PSK even
    when the engine gave up waiting), recording what each router holds.

``Checker``
    The invariant (see :meth:`Checker.step` and :meth:`Checker.end_of_run`).

``simulate(scenario)``
    One scenario end to end: a run, maybe a rerun with ``resume=True``, every check; returns
    the :class:`Report` (violations empty when all holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import random
import selectors
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import attrs

from magicwan._retry import (
    RetryPolicy,
    should_retry,
)  # private: the client's retry rules, simulated
from magicwan.delivery import Delivery
from magicwan.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    DeliveryError,
    ErrorDetail,
    InternalServerError,
    MagicWANError,
    RateLimitError,
    UnexpectedResponseError,
    mark_outcome_unknown,
)
from magicwan.internal.timestamps import Stamp
from magicwan.journal import JournalError
from magicwan.models.psk import AppliedPSK, PSKGenerateResult, PSKMetadata, PSKSetResult
from magicwan.models.tunnels import IPsecTunnel
from magicwan.reply import Reply
from magicwan.rotation import rotate
from tests.support.storage import Crashed, MemoryStorage

__all__ = [
    "ACCOUNT",
    "DEFECTS_FOUND",
    "JOURNAL",
    "KNOWN_DEFECTS",
    "Checker",
    "Report",
    "Scenario",
    "SimClock",
    "SimCloudflare",
    "SimDeadlock",
    "SimDeliverer",
    "VirtualLoop",
    "crash_point_scenario",
    "random_scenario",
    "replay_command",
    "simulate",
]

ACCOUNT = "0123456789abcdef0123456789abcdef"
JOURNAL = Path("/sim/rotation.jsonl")
EPOCH = datetime(2026, 6, 1, tzinfo=UTC)

#: The client's per-attempt timeout in the simulated transport.
CLIENT_TIMEOUT = 10.0
#: A late store lands at most this long after the client's timeout: well inside the settle
#: window the runs use (the engine cannot promise anything about a store after it).
LATE_STORE_MAX = 8.0
SETTLE_WINDOW = 30.0
#: How a PSK the server made begins (one the client made never does: new_psk's alphabet is
#: mixed case, and the odds of this prefix are negligible but nil for a replay).
SERVER_MADE = "srv-"
POLICY = RetryPolicy(max_retries=2, jitter=lambda: 0.5)

GENERATE_FAULTS = (
    "5xx_before",
    "5xx_after",
    "429",
    "reset_before",
    "reset_after",
    "truncated",
    "html",
    "timeout_late",
)
SET_FAULTS = (*GENERATE_FAULTS, "other_psk", "missing", "unapplied")
STORAGE_FAULTS = ("enospc", "eio", "efbig", "torn", "fsync")

#: Defects of the engine that the simulation can find, by the names the tests use.
#: A scenario avoids the triggers of those it lists in ``avoid`` (the default: all of them), so
#: the CI budget checks everything else; ``tests/simulation/test_known_defects.py`` runs each
#: one's trigger and expects it to fail. An engine that fixes one: remove it from this set (the
#: strict xfail tells you when).
#: Every defect the simulation found in the engine of its day (the names the tests use).
DEFECTS_FOUND = (
    "same-second-verified",
    "unrecorded-uncertain",
    "request-after-journal-failure",
    "rerun-skips-settle",
    "rerun-drops-doubt",
)
#: Defects of the engine the world still steers around (none today; a new one goes here,
#: with a strict xfail, until fixed).
KNOWN_DEFECTS: frozenset[str] = frozenset()


class SimDeadlock(RuntimeError):
    """The loop has nothing ready, no timer and no world event: it would wait forever."""


class Violation(AssertionError):
    """The invariant broke."""


# -- virtual time --------------------------------------------------------------------------------


class SimClock:
    """Virtual seconds shared by every loop of a scenario, and the world's own timers (events
    that happen whoever waits for them: a late store, a router taking a PSK)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), action))

    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def fire_next(self) -> None:
        when, _, action = heapq.heappop(self._timers)
        self.now = max(self.now, when)
        action()

    def fire_all(self) -> None:
        while self._timers:
            self.fire_next()


class _VirtualSelector(selectors.SelectSelector):
    def __init__(self, clock: SimClock) -> None:
        super().__init__()
        self._clock = clock
        self.loop: VirtualLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        clock = self._clock
        scheduled = getattr(self.loop, "_scheduled", None)
        if scheduled:
            # A timer due within the loop's clock resolution runs now: real time would have
            # reached it by then, so virtual time does too (or a wait of 1e-13 s spins).
            when = scheduled[0].when()
            if clock.now < when <= clock.now + 1e-6:
                clock.now = when
        target = None if timeout is None else clock.now + max(timeout, 0.0)
        world = clock.next_timer()
        if world is not None and (target is None or world <= target):
            clock.fire_next()
            return []
        if target is None:
            raise SimDeadlock("nothing ready, no timer: the loop would wait forever")
        clock.now = target
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop in virtual time (see the module docstring); ``after_step`` runs after
    every iteration."""

    def __init__(self, clock: SimClock, after_step: Callable[[], None] | None = None) -> None:
        self.sim_clock = clock
        self.after_step = after_step
        selector = _VirtualSelector(clock)
        super().__init__(selector)
        selector.loop = self

    #: A run that takes more loop iterations than this spins without making progress.
    max_steps = 200_000

    def time(self) -> float:
        return self.sim_clock.now

    def _run_once(self) -> None:
        self.steps = getattr(self, "steps", 0) + 1
        if self.steps > self.max_steps:
            raise SimDeadlock(f"no end after {self.max_steps} loop iterations (a livelock?)")
        super()._run_once()  # type: ignore[misc]
        if self.after_step is not None:
            self.after_step()


# -- the world ------------------------------------------------------------------------------------


def _stamp(seconds: float, digits: int) -> Stamp:
    moment = EPOCH + timedelta(seconds=seconds)
    if digits == 0:
        moment = moment.replace(microsecond=0)
    return Stamp(
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
        tzinfo=UTC,
        digits=digits,
    )


@attrs.define
class EdgePSK:
    psk: str
    at: float  # virtual seconds of the store


class SimCloudflare:
    """Cloudflare's PSK endpoints in memory, with the client's retries and seeded faults."""

    def __init__(
        self,
        clock: SimClock,
        rng: random.Random,
        tunnels: Iterable[str],
        *,
        fault_rate: float = 0.0,
        faults: tuple[str, ...] = SET_FAULTS,
        max_batch: int = 1000,
        read_fault_rate: float = 0.0,
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.fault_rate = fault_rate
        self.faults = faults
        self.max_batch = max_batch
        self.read_fault_rate = read_fault_rate
        #: Keep a late store out of the whole second of the tunnel's last store.
        self.avoid_same_second = False
        #: Faults to give first, by tunnel (or "set"), before any seeded one: None is none.
        self.script: dict[str, list[str | None]] = {}
        #: A late store's delay after the client's timeout, instead of a seeded one.
        self.late_delay: float | None = None
        self.latency: float | None = None
        self.edge: dict[str, EdgePSK] = {t: EdgePSK(f"init{t}", -1.0) for t in tunnels}
        self.initial = {t: e.psk for t, e in self.edge.items()}
        self.touched: set[str] = set()
        self._psks = itertools.count(1)
        #: Called before each new request (not a retry) with its kind, tunnels and PSKs sent.
        self.on_request: Callable[[str, list[str], dict[str, str] | None], None] | None = None
        self.crashed: Callable[[], bool] = lambda: False
        #: Called with the PSKs of each set request before it leaves.
        self.on_set: Callable[[dict[str, str]], None] | None = None
        #: Tunnels read back, with the virtual time of each read.
        self.reads: list[tuple[str, float]] = []
        self.requests: list[tuple[str, float, tuple[str, ...]]] = []
        #: What happened, in order, for a human reading a failing seed.
        self.trace: list[str] = []

    # -- helpers

    def _new_psk(self) -> str:
        return f"{SERVER_MADE}{next(self._psks):06d}{self.rng.randrange(10**8):08d}"

    def store(self, tunnel: str, psk: str) -> None:
        self.edge[tunnel] = EdgePSK(psk, self.clock.now)
        self.touched.add(tunnel)
        self.trace.append(f"{self.clock.now:10.3f} store {tunnel[:2]} {psk}")

    def _fault(self, key: str) -> str | None:
        script = self.script.get(key)
        if script:
            return script.pop(0)
        if self.faults and self.rng.random() < self.fault_rate:
            return self.rng.choice(self.faults)
        return None

    async def _latency(self) -> None:
        choice = self.rng.choice((0.01, 0.05, 0.1, 0.3))
        await asyncio.sleep(choice if self.latency is None else self.latency)

    def _check_alive(self) -> None:
        if self.crashed():
            raise Crashed("the process is dead: no request leaves it")

    async def _client(
        self,
        kind: str,
        tunnels: list[str],
        attempt: Callable[[], Awaitable[Any]],
        idem: bool,
        psks: dict[str, str] | None = None,
    ) -> Reply[Any]:
        """The transport's retry loop, on the simulated server."""
        self._check_alive()
        self.requests.append((kind, self.clock.now, tuple(tunnels)))
        self.trace.append(f"{self.clock.now:10.3f} {kind} {' '.join(t[:2] for t in tunnels)}")
        if self.on_request is not None:
            self.on_request(kind, tunnels, psks)
        attempts, uncertain = 0, False
        while True:
            attempts += 1
            try:
                value = await attempt()
            except MagicWANError as exc:
                self.trace.append(f"{self.clock.now:10.3f}   attempt {attempts}: {exc!r}")
                if exc.outcome_unknown:
                    uncertain = True
                if attempts > POLICY.max_retries or not should_retry(exc, POLICY, idempotent=idem):
                    if uncertain:
                        mark_outcome_unknown(exc)
                    raise
                if isinstance(exc, RateLimitError):
                    await asyncio.sleep(exc.retry_after or 1.0)
                else:
                    await asyncio.sleep(POLICY.backoff(attempts))
                self._check_alive()
                continue
            return Reply(value, attempts, uncertain)

    async def _faulty(self, fault: str | None, stores: Callable[[], None]) -> None:
        """The common faults of a POST: raise as the client would see them (after calling
        ``stores`` when the server acted), or return when the answer is to be given."""
        await self._latency()
        if fault == "timeout_late":
            late = self.rng.uniform(0.5, LATE_STORE_MAX)
            late = late if self.late_delay is None else self.late_delay
            self.clock.at(self.clock.now + CLIENT_TIMEOUT + late, self._late(stores))
            await asyncio.sleep(CLIENT_TIMEOUT)
            raise APITimeoutError("timed out", request_sent=True)
        if fault == "429":
            raise RateLimitError(429, [ErrorDetail(971, "rate limited")], retry_after=2.0)
        if fault == "reset_before":
            raise APIConnectionError("connection reset before sending", request_sent=False)
        if fault == "5xx_before":
            raise InternalServerError(502, [ErrorDetail(None, "bad gateway")])
        stores()
        await self._latency()
        if fault == "5xx_after":
            raise InternalServerError(500, [ErrorDetail(10001, "internal")])
        if fault == "reset_after":
            raise APIConnectionError("connection reset", request_sent=True)
        if fault == "truncated":
            raise UnexpectedResponseError("truncated answer", status=200, body_excerpt='{"res')
        if fault == "html":
            raise UnexpectedResponseError(
                "not JSON", status=502, body_excerpt="<html>bad gateway</html>"
            )

    def requests_since(self, count: int) -> bool:
        return len(self.requests) > count

    def _late(self, stores: Callable[[], None]) -> Callable[[], None]:
        def land() -> None:
            if self.avoid_same_second:
                last = max(e.at for e in self.edge.values())
                if int(last) == int(self.clock.now):
                    self.clock.at(int(self.clock.now) + 1.5, land)
                    return
            stores()

        return land

    # -- the callables rotate() takes

    async def generate(
        self, account_id: str, tunnel_id: str, validate_only: bool
    ) -> Reply[PSKGenerateResult]:
        assert not validate_only

        async def attempt() -> PSKGenerateResult:
            fault = self._fault(tunnel_id)
            made: list[str] = []

            def stores() -> None:
                made.append(self._new_psk())
                self.store(tunnel_id, made[-1])

            await self._faulty(fault if fault in GENERATE_FAULTS else None, stores)
            self._check_alive()
            return PSKGenerateResult(
                ipsec_tunnel_id=tunnel_id,
                psk=made[-1],
                psk_metadata=PSKMetadata(last_generated_on=_stamp(self.edge[tunnel_id].at, 6)),
            )

        return await self._client("generate", [tunnel_id], attempt, idem=False)

    async def set_psks(
        self, account_id: str, psks: Mapping[str, str], validate_only: bool
    ) -> Reply[PSKSetResult]:
        assert not validate_only
        sent = dict(psks)
        if self.on_set is not None:
            self.on_set(sent)

        async def attempt() -> PSKSetResult:
            if len(sent) > self.max_batch:
                await self._latency()
                raise APIError(413, [ErrorDetail(1005, "batch too large")])
            fault = self._fault("set")
            victim = self.rng.choice(sorted(sent))
            theirs = self._new_psk()

            def stores() -> None:
                for tunnel, psk in sent.items():
                    if tunnel == victim and fault == "unapplied":
                        continue
                    if tunnel == victim and fault == "missing" and self.rng.random() < 0.5:
                        continue
                    self.store(tunnel, theirs if tunnel == victim and fault == "other_psk" else psk)

            await self._faulty(fault if fault in GENERATE_FAULTS else None, stores)
            self._check_alive()
            applied: dict[str, AppliedPSK] = {}
            unapplied: dict[str, str] = {}
            for tunnel, psk in sent.items():
                if tunnel == victim and fault == "unapplied":
                    unapplied[tunnel] = "tunnel is being modified"
                    continue
                if tunnel == victim and fault == "missing":
                    continue
                edge = self.edge[tunnel]
                applied[tunnel] = AppliedPSK(
                    ipsec_tunnel_id=tunnel,
                    psk=theirs if tunnel == victim and fault == "other_psk" else psk,
                    psk_metadata=PSKMetadata(last_generated_on=_stamp(edge.at, 6)),
                )
            missing = tuple(t for t in sent if t not in applied and t not in unapplied)
            return PSKSetResult(applied=applied, unapplied=unapplied, missing=missing)

        return await self._client("set", sorted(sent), attempt, idem=True, psks=sent)

    async def read_back(self, account_id: str, tunnel_id: str) -> Reply[IPsecTunnel]:
        async def attempt() -> IPsecTunnel:
            await self._latency()
            if self.read_fault_rate and self.rng.random() < self.read_fault_rate:
                raise InternalServerError(503, [ErrorDetail(None, "unavailable")])
            self.reads.append((tunnel_id, self.clock.now))
            edge = self.edge[tunnel_id]
            stamp = _stamp(edge.at, 0) if edge.at >= 0 else None
            return IPsecTunnel(id=tunnel_id, psk_metadata=PSKMetadata(last_generated_on=stamp))

        self._check_alive()
        return await self._client("read", [tunnel_id], attempt, idem=True)


DeliverMode = Literal["ok", "mixed", "always_fail"]


class SimDeliverer:
    """Delivers to simulated routers: succeeds, fails, hangs, or succeeds late."""

    def __init__(
        self,
        clock: SimClock,
        rng: random.Random,
        world: SimCloudflare,
        mode: DeliverMode,
        check: Callable[[str, str], None],
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.world = world
        self.mode = mode
        self.check = check
        self.router: dict[str, str] = dict(world.initial)
        self.delivered: set[tuple[str, str]] = set()  # (tunnel, psk) any router ever took
        self.calls = 0
        self.called: set[str] = set()  # tunnels this run tried to deliver

    def _take(self, tunnel: str, psk: str) -> None:
        self.router[tunnel] = psk
        self.delivered.add((tunnel, psk))

    async def __call__(self, delivery: Delivery) -> None:
        if self.world.crashed():
            raise Crashed("the process is dead")
        self.calls += 1
        tunnel, psk = delivery.tunnel_id, delivery.psk
        self.called.add(tunnel)
        self.check(tunnel, psk)
        if self.mode == "always_fail":
            await asyncio.sleep(0.05)
            raise DeliveryError("router unreachable", reason="error", tunnel_id=tunnel)
        what = "ok" if self.mode == "ok" else self.rng.choice(("ok", "ok", "fail", "hang", "late"))
        if what == "ok":
            await asyncio.sleep(self.rng.choice((0.01, 0.2)))
            self._take(tunnel, psk)
        elif what == "fail":
            await asyncio.sleep(0.05)
            raise DeliveryError("router said no", reason="error", tunnel_id=tunnel)
        elif what == "hang":
            await asyncio.Event().wait()
        else:
            late = self.rng.uniform(1.0, 12.0)  # maybe past the engine's deliver_timeout
            self.clock.at(self.clock.now + late, lambda: self._take(tunnel, psk))
            await asyncio.sleep(late)


# -- the invariant --------------------------------------------------------------------------------


def journal_psks(data: bytes) -> dict[str, set[str]]:
    """Every PSK a journal's bytes record, by tunnel (rotated lines and set intents)."""
    found: dict[str, set[str]] = {}
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            break
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and isinstance(line.get("psk"), str):
            found.setdefault(str(line.get("tunnel_id")).lower(), set()).add(line["psk"])
    return found


@attrs.define
class Report:
    scenario: Scenario
    violations: list[str] = attrs.field(factory=list)
    outcomes: list[list[Any]] = attrs.field(factory=list)  # one list per run
    operations: int = 0
    crashed: bool = False
    trace: list[str] = attrs.field(factory=list)

    def ok(self) -> bool:
        return not self.violations


class Checker:
    """The invariant, checked after every loop step and at the end of each run.

    - every PSK the edge holds for a tunnel a run touched is in the durable journal, in an
      outcome handed to the caller, or on its router, unless the tunnel's latest outcome says
      ``outcome_unknown`` (a generate answer lost: nobody can have it);
    - no ``ok`` outcome carries a PSK the edge does not hold (checked once late stores landed);
    - exactly one outcome per tunnel per run;
    - a delivered PSK is the edge's when it is delivered;
    - no new request after the journal failed (a write or fsync fault);
    - with a ``window`` on the rotation: live-but-undelivered tunnels never exceed it, and an
      always-failing deliverer breaks at most ``halt_after`` tunnels;
    - a rerun keeps every doubt: a generate tunnel left in doubt is not reported ok without a
      read-back after its new PSK.
    """

    def __init__(self, report: Report, world: SimCloudflare) -> None:
        self.report = report
        self.world = world
        self.storage: MemoryStorage | None = None
        self.deliverer: SimDeliverer | None = None
        self.durable: dict[str, set[str]] = {}
        self.kept: dict[str, set[str]] = {}  # handed in finished runs, or delivered
        self.handed: dict[str, list[Any]] = {}  # this run
        self.latest: dict[str, Any] = {}  # latest outcome per tunnel (finished runs)
        self.journal_failed = False
        self.rotation: Any = None
        self.max_window = 0
        self._dirty = True
        self._fired = 0
        self.check_doubt = True
        self.doubt_ever: set[str] = set()  # tunnels an outcome said outcome_unknown for
        self.doubted: set[str] = set()  # tunnels a rerun must not call ok unchecked
        self.run_started = 0.0
        self.method = "generate"
        self.inherited: set[str] = set()  # live and undelivered when this run started

    def violate(self, text: str) -> None:
        if text not in self.report.violations:
            self.report.violations.append(text)

    # -- hooks

    def attach(self, storage: MemoryStorage) -> None:
        self.storage = storage
        self._fired = self._faults_fired(storage)
        storage.observer = self._storage_op
        self._dirty = True

    def _storage_op(self, op: str, count: int) -> None:
        if op == "fsync":
            self._dirty = True

    def on_request(self, kind: str, tunnels: list[str], psks: dict[str, str] | None) -> None:
        if kind == "read" or not self._journal_broken():
            return
        if psks is not None and "request-after-journal-failure" in self.report.scenario.avoid:
            self._refresh()
            if all(p in self.durable.get(t.lower(), ()) for t, p in psks.items()):
                return  # a known defect of today's engine, and no PSK is at stake
        self.violate(f"a {kind} request for {tunnels} was sent after the journal failed")

    def _journal_broken(self) -> bool:
        storage = self.storage
        if storage is None:
            return False
        # A fault that fired on a write or an fsync in this run breaks its journal.
        return self._faults_fired(storage) > self._fired

    @staticmethod
    def _faults_fired(storage: MemoryStorage) -> int:
        return sum(f.fired for f in storage.faults if f.op in ("write", "fsync"))

    def on_deliver(self, tunnel: str, psk: str) -> None:
        edge = self.world.edge[tunnel].psk
        self.world.trace.append(f"{self.world.clock.now:10.3f} deliver {tunnel[:2]} {psk}")
        if psk != edge:
            self.violate(f"tunnel {tunnel}: delivered a PSK the edge does not hold")
        self._refresh()
        if psk not in self.durable.get(tunnel, ()) and not self._journal_broken():
            self.violate(f"tunnel {tunnel}: delivered a PSK before it was durable")

    def on_set(self, sent: dict[str, str]) -> None:
        self._refresh()
        for tunnel, psk in sorted(sent.items()):
            if psk not in self.durable.get(tunnel.lower(), ()):
                self.violate(f"tunnel {tunnel}: a set request sent a PSK not durable first")

    def at_crash(self) -> None:
        """The process died: with ``set``, every PSK the edge holds was durable (its intent)."""
        self._refresh()
        if self.method != "set":
            return
        for tunnel in sorted(self.world.touched):
            psk = self.world.edge[tunnel].psk
            router = self.deliverer is not None and self.deliverer.router[tunnel] == psk
            if psk.startswith(SERVER_MADE):
                continue  # the server's own PSK (an odd answer): known only from the answer
            if psk not in self.durable.get(tunnel, ()) and not router:
                self.violate(f"tunnel {tunnel}: at the crash, the edge held a set PSK not durable")

    def start_run(self, storage: MemoryStorage, rerun: bool) -> None:
        """Before a run: a rerun must keep the doubt a run before it left."""
        self.run_started = self.world.clock.now
        self.doubted = set()
        # Tunnels a run before left live but undelivered: this run's window cannot undo
        # them; they count once this run starts delivering them.
        self.inherited = set()
        if self.deliverer is not None:
            self.deliverer.called = set()
            self.inherited = {
                t for t, e in self.world.edge.items() if e.psk != self.deliverer.router[t]
            }
        if not rerun:
            return
        from magicwan.journal import read_journal

        copy = MemoryStorage({str(JOURNAL): storage.content(JOURNAL)})  # not counted
        records = {tunnel: r for (_, tunnel), r in read_journal(JOURNAL, storage=copy).items()}
        # A request a run before left open (or whose outcome was unknown) may still land
        # during this run: what it exposes is that run's, not this run's window's.
        self.inherited |= {t for t, r in records.items() if r.left_open or r.outcome_unknown}
        self.inherited |= {
            t for t, o in self.latest.items() if getattr(o, "outcome_unknown", False)
        }
        if not self.check_doubt or self.method != "generate":
            return
        for tunnel, record in records.items():
            if record.left_open or record.outcome_unknown or record.uncertain:
                self.doubted.add(tunnel)
        for tunnel, outcome in self.latest.items():
            found = records.get(tunnel.lower())
            # A certain rotated line written since (by a run a crash cut) settled it.
            settled = found is not None and found.rotated and not found.uncertain
            if getattr(outcome, "outcome_unknown", False) and not settled:
                self.doubted.add(tunnel)

    def on_outcome(self, outcome: Any) -> None:
        tunnel = outcome.tunnel_id
        self.world.trace.append(
            f"{self.world.clock.now:10.3f} outcome {tunnel[:2]} {outcome.state.value} "
            f"psk={_psk_of(outcome)} unknown={getattr(outcome, 'outcome_unknown', None)} "
            f"verified={getattr(outcome, 'verified', None)} "
            f"unverified={getattr(outcome, 'unverified', None)!r}"
        )
        if self.handed.get(tunnel):
            self.violate(f"tunnel {tunnel}: a second outcome in one run")
        self.handed.setdefault(tunnel, []).append(outcome)
        if getattr(outcome, "outcome_unknown", False):
            self.doubt_ever.add(tunnel)
        elif outcome.ok:
            self.doubt_ever.discard(tunnel)
        psk = _psk_of(outcome)
        self._refresh()
        unrecorded = outcome.state.value == "unrecorded"
        live = psk is not None and psk == self.world.edge[tunnel].psk
        if live and not unrecorded and psk not in self.durable.get(tunnel, ()):
            # (A PSK the edge no longer holds may be handed over as it is: it is no secret
            # any tunnel runs on.)
            self.violate(
                f"tunnel {tunnel}: a live PSK handed over ({outcome.state.value}) not durable"
            )
        # An ok outcome that says it is unverified keeps the doubt (and so does its
        # journal line: the next rerun reads it back again).
        if tunnel in self.doubted and outcome.ok and not getattr(outcome, "unverified", None):
            last_store = self.world.edge[tunnel].at
            read = any(t == tunnel and at >= last_store for t, at in self.world.reads)
            # A PSK stored once every earlier request can no longer land supersedes them:
            # the doubt is over without a read-back.
            settled = last_store >= self.run_started + CLIENT_TIMEOUT + LATE_STORE_MAX
            if not settled and (not read or last_store < self.run_started):
                self.violate(
                    f"tunnel {tunnel}: a rerun reported ok a tunnel left in doubt, with no "
                    "read-back of its new PSK"
                )

    # -- the checks

    def _refresh(self) -> None:
        if self._dirty and self.storage is not None:
            for tunnel, psks in journal_psks(self.storage.durable(JOURNAL)).items():
                self.durable.setdefault(tunnel, set()).update(psks)
            self._dirty = False

    def _known(self, tunnel: str) -> bool:
        psk = self.world.edge[tunnel].psk
        if psk == self.world.initial[tunnel]:
            return True
        if psk in self.durable.get(tunnel, ()) or psk in self.kept.get(tunnel, ()):
            return True
        for outcome in self.handed.get(tunnel, ()):
            if _psk_of(outcome) == psk:
                return True
        return self.deliverer is not None and (tunnel, psk) in self.deliverer.delivered

    def _exempt(self, tunnel: str) -> bool:
        handed = self.handed.get(tunnel)
        outcome = handed[-1] if handed else self.latest.get(tunnel)
        if outcome is None:
            return False
        # Doubt said out loud: an unknown outcome, or a PSK handed over unverified.
        unknown = bool(getattr(outcome, "outcome_unknown", False))
        if "rerun-drops-doubt" in self.report.scenario.avoid and tunnel in self.doubt_ever:
            unknown = unknown or not outcome.ok  # the doubt an earlier outcome said
        return unknown or bool(getattr(outcome, "unverified", None))

    def step(self) -> None:
        """After every loop iteration: the tunnels whose outcome the caller has."""
        if self.storage is not None and self.storage.crashed:
            return
        self._refresh()
        for tunnel in self.handed:
            if not self._known(tunnel) and not self._exempt(tunnel):
                self.violate(
                    f"tunnel {tunnel}: the edge holds a PSK that is in no durable journal line, "
                    "no outcome and no router (after its outcome was handed over)"
                )
        window = getattr(self.rotation, "window", None)
        if isinstance(window, int) and self.deliverer is not None:
            self.max_window = max(self.max_window, window)
            live = sum(
                1
                for t, e in self.world.edge.items()
                if t not in self.handed
                and e.psk != self.deliverer.router[t]
                and (t not in self.inherited or t in self.deliverer.called)
            )
            if live > self.max_window:
                self.violate(f"{live} tunnels live but undelivered, window {self.max_window}")

    def end_of_run(self, targets: list[str], *, completed: bool) -> None:
        """After a run that was not cut by a crash: one outcome each, and the coverage."""
        self._refresh()
        if completed:
            missing = [t for t in targets if t not in self.handed]
            if missing:
                self.violate(f"tunnels without an outcome: {missing}")
        for tunnel, outcomes in self.handed.items():
            self.latest[tunnel] = outcomes[-1]
            for outcome in outcomes:
                psk = _psk_of(outcome)
                if psk is not None:
                    self.kept.setdefault(tunnel, set()).add(psk)
        self.report.outcomes.append([o for os in self.handed.values() for o in os])
        self.handed = {}

    def after_crash(self) -> None:
        """A crash: what the caller held died with the process."""
        self.report.outcomes.append([o for os in self.handed.values() for o in os])
        self.handed = {}

    def final(self, halt_after: int | None) -> None:
        """Once every late store has landed."""
        self._refresh()
        for tunnel in sorted(self.world.touched):
            if not self._known(tunnel) and not self._exempt(tunnel):
                self.violate(
                    f"tunnel {tunnel}: the edge holds a PSK that is in no durable journal line, "
                    "no outcome and no router"
                )
            outcome = self.latest.get(tunnel)
            doubt = outcome is not None and getattr(outcome, "unverified", None)
            held = _psk_of(outcome) if outcome is not None and outcome.ok else None
            if held is not None and not doubt and held != self.world.edge[tunnel].psk:
                what = "verified" if getattr(outcome, "verified", False) else "ok"
                self.violate(
                    f"tunnel {tunnel}: its outcome says {what} with a PSK the edge does not hold"
                )
        window = getattr(self.rotation, "window", None)
        deliverer = self.deliverer
        if window is not None and deliverer is not None and deliverer.mode == "always_fail":
            broken = [t for t, e in self.world.edge.items() if e.psk != deliverer.router[t]]
            if halt_after is not None and len(broken) > halt_after:
                self.violate(f"{len(broken)} tunnels broken, halt_after={halt_after}")


def _psk_of(outcome: Any) -> str | None:
    result = getattr(outcome, "result", None)
    psk = getattr(result, "psk", None)
    return psk if isinstance(psk, str) else None


# -- scenarios -------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Scenario:
    """One simulated rotation (and maybe a crash and a rerun), fully determined by its fields."""

    seed: int
    tunnels: int = 8
    method: Literal["generate", "set"] = "generate"
    concurrency: int = 4
    batch_size: int = 3
    max_batch: int = 1000
    deliver: DeliverMode | None = None
    fault_rate: float = 0.0
    faults: tuple[str, ...] = SET_FAULTS
    read_fault_rate: float = 0.0
    storage_fault: str | None = None
    storage_fault_at: int = 0
    halt_after: int | None = None
    #: Crash after this storage operation (then resume on a fault-free world).
    crash_after: int | None = None
    crash_mode: Literal["process", "power", "torn"] = "process"
    rerun: bool = False
    #: Known defects whose triggers the world avoids (see :data:`KNOWN_DEFECTS`).
    avoid: frozenset[str] = KNOWN_DEFECTS
    #: Faults given first, by tunnel index (or -1 for set requests), then seeded ones.
    script: tuple[tuple[int, tuple[str | None, ...]], ...] = ()
    #: Fixed request latency and late-store delay (seconds), instead of seeded ones.
    latency: float | None = None
    late_delay: float | None = None


def crash_point_scenario(
    method: Literal["generate", "set"], deliver: bool, crash_after: int | None = None, **kw: Any
) -> Scenario:
    """The fixed crash-point scenario: 8 tunnels, a fault-free world, one crash."""
    return Scenario(
        seed=16,
        tunnels=8,
        method=method,
        concurrency=3,
        batch_size=3,
        deliver="ok" if deliver else None,
        crash_after=crash_after,
        **kw,
    )


def random_scenario(seed: int, **changes: Any) -> Scenario:
    """A scenario drawn from ``seed`` alone (for plain loops over seeds, and the teeth)."""
    r = random.Random(seed)
    scenario = Scenario(
        seed=seed,
        tunnels=r.randint(1, 10),
        method=r.choice(("generate", "set")),
        concurrency=r.randint(1, 4),
        batch_size=r.randint(1, 6),
        max_batch=r.choice((1000, 2, 3)),
        deliver=r.choice((None, "ok", "mixed", "always_fail")),
        fault_rate=r.choice((0.0, 0.1, 0.3, 0.6)),
        read_fault_rate=r.choice((0.0, 0.2)),
        storage_fault=r.choice((None, None, *STORAGE_FAULTS)),
        storage_fault_at=r.randint(0, 12),
        halt_after=r.choice((None, 2, 5)),
        rerun=r.random() < 0.3,
        crash_after=r.choice((None, None, None, r.randint(1, 80))),
        crash_mode=r.choice(("process", "power", "torn")),
    )
    return attrs.evolve(scenario, **changes)


def replay_command(scenario: Scenario) -> str:
    return (
        f"MAGICWAN_SIM_REPLAY='{scenario!r}' python -m pytest -q "
        "tests/simulation/test_simulation.py::test_replay"
    )


def _tunnel_ids(count: int) -> list[str]:
    return [f"{i:02d}" + "ab" * 15 for i in range(count)]


def _arm_storage(storage: MemoryStorage, scenario: Scenario) -> None:
    import errno

    kind, at = scenario.storage_fault, scenario.storage_fault_at
    header = lambda data: b'"event":"journal"' not in data  # noqa: E731 - the header is fine
    if kind == "enospc":
        storage.fail("write", errno.ENOSPC, skip=at, when=header)
    elif kind == "eio":
        storage.fail("write", errno.EIO, skip=at, when=header)
    elif kind == "efbig":
        storage.fail("write", errno.EFBIG, skip=at, times=None, when=header)
    elif kind == "torn":
        storage.fail("write", errno.ENOSPC, skip=at, torn=7, when=header)
    elif kind == "fsync":
        storage.fail("fsync", errno.EIO, skip=at + 1)  # the opening's fsync goes through
    elif kind == "rotated":  # the ``at``-th rotated line meets a full disk
        storage.fail("write", errno.ENOSPC, skip=at, when=lambda d: b'"event":"rotated"' in d)


def simulate(scenario: Scenario, *, rotate_fn: Callable[..., Any] = rotate) -> Report:
    """Run ``scenario`` end to end and check the invariant; see the module docstring."""
    report = Report(scenario)
    rng = random.Random(scenario.seed)
    clock = SimClock(1000.0)
    tunnels = _tunnel_ids(scenario.tunnels)
    avoid = scenario.avoid
    faults, max_batch = scenario.faults, scenario.max_batch
    if scenario.storage_fault is not None:
        if "unrecorded-uncertain" in avoid:
            faults = tuple(f for f in faults if f != "timeout_late")
        if "request-after-journal-failure" in avoid:
            max_batch = 1000  # no split (the checker lets durable set batches through)
    world = SimCloudflare(
        clock,
        random.Random(rng.randrange(2**32)),
        tunnels,
        fault_rate=scenario.fault_rate,
        faults=faults,
        max_batch=max_batch,
        read_fault_rate=scenario.read_fault_rate,
    )
    world.avoid_same_second = "same-second-verified" in avoid
    world.latency, world.late_delay = scenario.latency, scenario.late_delay
    for index, faults_given in scenario.script:
        key = "set" if index < 0 else tunnels[index]
        world.script[key] = list(faults_given)
    checker = Checker(report, world)
    checker.method = scenario.method
    checker.check_doubt = "rerun-skips-settle" not in avoid
    world.on_request = checker.on_request
    world.on_set = checker.on_set
    deliverer = None
    if scenario.deliver is not None:
        deliverer = SimDeliverer(
            clock, random.Random(rng.randrange(2**32)), world, scenario.deliver, checker.on_deliver
        )
        checker.deliverer = deliverer
    storage = MemoryStorage()
    _arm_storage(storage, scenario)
    storage.crash_after = scenario.crash_after
    runs: list[tuple[MemoryStorage, bool]] = [(storage, scenario.rerun)]
    crash_seen = False
    first = True
    while runs:
        current, again = runs.pop(0)
        checker.attach(current)
        checker.start_run(current, rerun=not first)
        first = False
        world.crashed = lambda current=current: current.crashed  # type: ignore[misc]
        random.seed(rng.randrange(2**32))  # the engine's delivery jitter
        crashed = _run_once(scenario, rotate_fn, clock, world, deliverer, checker, current, tunnels)
        report.operations += current.operations
        if crashed:
            crash_seen = True
            checker.at_crash()
            checker.after_crash()
            image = current.after_crash(scenario.crash_mode)
            if "rerun-skips-settle" in avoid:
                clock.fire_all()  # the restart comes once every late store has landed
            world.trace.append(f"{clock.now:10.3f} --- crash, resume (resume=True)")
            world.fault_rate = 0.0
            world.read_fault_rate = 0.0
            if deliverer is not None and deliverer.mode == "mixed":
                deliverer.mode = "ok"
            runs.append((image, again))
        elif again:
            current.faults.clear()  # the rerun finds a disk with room again
            if "rerun-skips-settle" in avoid:
                clock.fire_all()  # the rerun comes once every late store has landed
            world.trace.append(f"{clock.now:10.3f} --- rerun (resume=True)")
            runs.append((current, False))
    report.crashed = crash_seen
    report.trace = world.trace
    clock.fire_all()  # every late store and late delivery lands
    checker.final(scenario.halt_after)
    return report


def _run_once(
    scenario: Scenario,
    rotate_fn: Callable[..., Any],
    clock: SimClock,
    world: SimCloudflare,
    deliverer: SimDeliverer | None,
    checker: Checker,
    storage: MemoryStorage,
    tunnels: list[str],
) -> bool:
    """One rotation on a fresh virtual loop; True if the storage crashed during it."""
    loop = VirtualLoop(clock, checker.step)
    problems: list[str] = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if storage.crashed or isinstance(exc, Crashed):
            return
        problems.append(f"loop: {context.get('message')}: {exc!r}")

    loop.set_exception_handler(handler)
    started = len(world.requests)
    started_ok: list[bool] = []

    async def main() -> None:
        rotation = rotate_fn(
            ACCOUNT,
            tunnels,
            generate=world.generate,
            set_psks=world.set_psks,
            read_back=world.read_back,
            clock=loop.time,
            sleep=asyncio.sleep,
            method=scenario.method,
            concurrency=scenario.concurrency,
            batch_size=scenario.batch_size,
            journal=JOURNAL,
            deliver=deliverer,
            deliver_retries=1,
            deliver_timeout=5.0,
            halt_after=scenario.halt_after,
            settle_window=SETTLE_WINDOW,
            drain_timeout=60.0,
            storage=storage,
            resume=True,
        )
        checker.rotation = rotation
        try:
            await rotation.__aenter__()
        except JournalError:
            # Refused before anything was sent (the journal cannot be opened): no outcomes.
            if not world.requests_since(started):
                started_ok.append(False)
                return
            raise
        try:
            async for outcome in rotation:
                if storage.crashed:
                    return
                checker.on_outcome(outcome)
        except JournalError:
            if not checker._journal_broken() and not storage.crashed:
                problems.append("the rotation raised JournalError with no journal fault")
        finally:
            await rotation.aclose()
        if not storage.crashed:
            for outcome in rotation.unclaimed:
                checker.on_outcome(outcome)

    completed = False
    try:
        loop.run_until_complete(main())
        completed = not started_ok
    except Crashed:
        pass
    except SimDeadlock as exc:
        problems.append(f"deadlock: {exc}")
    except Violation as exc:
        problems.append(str(exc))
    except BaseException as exc:
        if not storage.crashed:
            problems.append(f"the rotation raised {type(exc).__name__}: {exc}")
    finally:
        _shut(loop)
    crashed = storage.crashed
    for problem in problems:
        checker.violate(problem)
    if not crashed:
        checker.end_of_run(tunnels, completed=completed)
    return crashed


def _shut(loop: VirtualLoop) -> None:
    loop.after_step = None
    loop.steps = -10 * loop.max_steps  # the clean-up gets its own budget
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        with contextlib.suppress(BaseException):  # a dead process's tasks: nothing to keep
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
