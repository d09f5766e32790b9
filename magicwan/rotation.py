"""Bulk PSK rotation: many tunnels at once, paced by the client's limiter, no PSK lost.

A rotation runs ``concurrency`` workers over the tunnel ids and yields one
:class:`RotationOutcome` per tunnel in completion order. With a journal, every PSK
is on disk (fsynced) before its outcome is handed over, and a rerun with the same
journal skips the tunnels already rotated and redoes the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime
from os import PathLike
from typing import TYPE_CHECKING

import attrs

from magicwan._converter import parse_datetime
from magicwan._validation import check_bool, check_id, check_positive_int
from magicwan.errors import InvalidInputError, MagicWANError, UnexpectedResponseError
from magicwan.journal import Journal, JournalRecord, read_journal
from magicwan.models.psk import PSKGenerateResult, PSKMetadata

if TYPE_CHECKING:
    from magicwan._transport import Reply
    from magicwan.models.tunnels import IPsecTunnel

#: Generate one tunnel's PSK: ``(account_id, tunnel_id, validate_only) -> Reply``.
Generate = Callable[[str, str, bool], Awaitable["Reply[PSKGenerateResult]"]]
#: Read one tunnel back: ``(account_id, tunnel_id) -> Reply``.
ReadBack = Callable[[str, str], Awaitable["Reply[IPsecTunnel]"]]

__all__ = ["DEFAULT_CONCURRENCY", "MAX_VERIFY_ROUNDS", "RotationOutcome", "rotate"]

logger = logging.getLogger("magicwan")

DEFAULT_CONCURRENCY = 16
#: How many times a rotation regenerates a PSK that read-back shows was superseded.
MAX_VERIFY_ROUNDS = 3


@attrs.frozen(kw_only=True)
class RotationOutcome:
    """What happened to one tunnel.

    ``ok`` with ``result`` (the PSK is in ``result.psk``), or not ``ok`` with ``error``.
    ``skipped`` means the journal already held this tunnel's new PSK (``result`` is
    rebuilt from it). ``verified`` means the PSK was checked against a read-back of
    the tunnel because a retry had made its outcome uncertain.
    """

    tunnel_id: str
    ok: bool
    result: PSKGenerateResult | None = None
    error: MagicWANError | None = None
    attempts: int = 0
    skipped: bool = False
    verified: bool = False


def _unique_ids(tunnel_ids: Iterable[str]) -> list[str]:
    if isinstance(tunnel_ids, str):
        raise TypeError("tunnel_ids must be an iterable of ids, not one string")
    seen: set[str] = set()
    unique = []
    for tunnel_id in tunnel_ids:
        check_id(tunnel_id, "tunnel_id")
        key = tunnel_id.lower()  # hex ids: two spellings are one tunnel
        if key not in seen:
            seen.add(key)
            unique.append(tunnel_id)
    return unique


def _from_record(record: JournalRecord) -> PSKGenerateResult:
    generated = None
    if record.last_generated_on:
        with contextlib.suppress(TypeError, ValueError):
            generated = parse_datetime(record.last_generated_on)
    return PSKGenerateResult(
        ipsec_tunnel_id=record.tunnel_id,
        psk=record.psk,
        psk_metadata=PSKMetadata(last_generated_on=generated),
    )


def _stamp(result: PSKGenerateResult) -> datetime | None:
    return result.psk_metadata.last_generated_on if result.psk_metadata else None


class _Run:
    """One rotation: its journal and the per-tunnel procedure."""

    def __init__(
        self,
        generate: Generate,
        read_back: ReadBack,
        account_id: str,
        validate_only: bool,
        journal: Journal | None,
    ) -> None:
        self.generate = generate
        self.read_back = read_back
        self.account_id = account_id
        self.validate_only = validate_only
        self.journal = journal if not validate_only else None
        self.done: dict[str, JournalRecord] = {}
        if self.journal is not None:
            for (account, tunnel_id), record in read_journal(self.journal.path).items():
                same_account = account is not None and account.lower() == account_id.lower()
                if same_account and record.event == "rotated" and record.psk:
                    self.done[tunnel_id.lower()] = record

    async def _generate(self, tunnel_id: str) -> Reply[PSKGenerateResult]:
        """Generate, and write the new PSK to the journal (made durable before its
        outcome is handed over)."""
        if self.journal is not None:
            self.journal.intent(self.account_id, tunnel_id)
        reply = await self.generate(self.account_id, tunnel_id, self.validate_only)
        if self.journal is not None:
            self.journal.rotated(
                self.account_id, reply.value, attempts=reply.attempts, uncertain=reply.uncertain
            )
        return reply

    async def _matches_edge(self, tunnel_id: str, result: PSKGenerateResult) -> bool:
        current = (await self.read_back(self.account_id, tunnel_id)).value
        held = _stamp(result)
        edge = current.psk_metadata.last_generated_on if current.psk_metadata else None
        return held is not None and edge == held

    async def one(self, tunnel_id: str) -> tuple[RotationOutcome, int]:
        """Rotate one tunnel: its outcome, and how much of the journal must be durable
        before the outcome may be handed over. Never raises a MagicWANError."""
        outcome = await self._one(tunnel_id)
        return outcome, self.journal.written if self.journal is not None else 0

    async def _one(self, tunnel_id: str) -> RotationOutcome:
        record = self.done.get(tunnel_id.lower())
        attempts = 0
        reused = record is not None  # no new PSK made in this run (yet)
        try:
            if record is not None:
                result = _from_record(record)
                uncertain = record.uncertain
            else:
                reply = await self._generate(tunnel_id)
                attempts, result, uncertain = reply.attempts, reply.value, reply.uncertain
            if self.validate_only or not uncertain:
                return RotationOutcome(
                    tunnel_id=tunnel_id,
                    ok=True,
                    result=result,
                    attempts=attempts,
                    skipped=record is not None,
                )
            # A retry (or a crash) left doubt: an earlier request may have stored a PSK
            # we never saw. Read the tunnel back; regenerate until the edge holds ours.
            for _ in range(MAX_VERIFY_ROUNDS):
                if await self._matches_edge(tunnel_id, result):
                    if self.journal is not None:
                        self.journal.verified(self.account_id, result)
                    return RotationOutcome(
                        tunnel_id=tunnel_id,
                        ok=True,
                        result=result,
                        attempts=attempts,
                        skipped=reused,
                        verified=True,
                    )
                logger.warning(
                    "tunnel %s: the edge holds a newer PSK than the one received; regenerating",
                    tunnel_id,
                )
                reply = await self._generate(tunnel_id)
                attempts += reply.attempts
                result = reply.value
                reused = False
            raise UnexpectedResponseError(
                f"tunnel {tunnel_id}: read-back never matched the generated PSK "
                f"after {MAX_VERIFY_ROUNDS} rounds"
            )
        except MagicWANError as exc:
            if self.journal is not None:
                self.journal.failed(self.account_id, tunnel_id, exc)
            return RotationOutcome(tunnel_id=tunnel_id, ok=False, error=exc, attempts=attempts)


class _Crash:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


async def _run(
    generate: Generate,
    read_back: ReadBack,
    account_id: str,
    ids: list[str],
    concurrency: int,
    validate_only: bool,
    journal_path: str | PathLike[str] | None,
) -> AsyncIterator[RotationOutcome]:
    journal = None
    if journal_path is not None and not validate_only:
        journal = Journal(journal_path)
        journal.open()
    try:
        run = _Run(generate, read_back, account_id, validate_only, journal)
        # Workers -> staged -> the deliverer (fsync) -> ready -> the caller. The deliverer
        # makes each outcome's journal lines durable before handing it over, while the
        # workers already send their next requests: one fsync covers every line written
        # before it started (group commit), and nobody waits for the disk in line.
        staged: asyncio.Queue[object] = asyncio.Queue(maxsize=concurrency)
        ready: asyncio.Queue[object] = asyncio.Queue(maxsize=concurrency)
        pending = iter(ids)
        n_workers = max(1, min(concurrency, len(ids)))

        async def worker() -> None:
            try:
                for tunnel_id in pending:
                    await staged.put(await run.one(tunnel_id))
            except Exception as exc:  # a bug or a journal failure: stop the whole run
                await staged.put(_Crash(exc))
                return
            await staged.put(_DONE)

        async def deliverer() -> None:
            running = n_workers
            try:
                while running:
                    item = await staged.get()
                    if item is _DONE:
                        running -= 1
                        continue
                    if isinstance(item, _Crash):
                        await ready.put(item)
                        return
                    assert isinstance(item, tuple)
                    outcome, durable_upto = item
                    if journal is not None:
                        await journal.sync(durable_upto)
                    await ready.put(outcome)
            except Exception as exc:
                await ready.put(_Crash(exc))
                return
            await ready.put(_DONE)

        tasks = [asyncio.create_task(worker()) for _ in range(n_workers)]
        tasks.append(asyncio.create_task(deliverer()))
        try:
            while True:
                item = await ready.get()
                if item is _DONE:
                    break
                if isinstance(item, _Crash):
                    raise item.exc
                assert isinstance(item, RotationOutcome)
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if journal is not None:
            await journal.aclose()


def rotate(
    generate: Generate,
    read_back: ReadBack,
    account_id: str,
    tunnel_ids: Iterable[str],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    validate_only: bool = False,
    journal: str | PathLike[str] | None = None,
) -> AsyncIterator[RotationOutcome]:
    """Check every argument now, then return the async iterator of outcomes."""
    check_id(account_id, "account_id")
    check_positive_int(concurrency, "concurrency")
    check_bool(validate_only, "validate_only")
    if journal is not None and not isinstance(journal, str | PathLike):
        raise InvalidInputError("journal must be a path")
    ids = _unique_ids(tunnel_ids)
    return _run(generate, read_back, account_id, ids, concurrency, validate_only, journal)
