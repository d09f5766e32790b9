"""Which tunnels ``psk rotate`` takes: the options' selection, a journal's reuse, the
dry run."""

from __future__ import annotations

import argparse
import fnmatch
import math
from typing import Any

import attrs

from magicwan.cli.common import UsageError
from magicwan.cli.console import Console
from magicwan.cli.status import ExitStatus
from magicwan.internal.redaction import shown_id
from magicwan.journal import JournalError, read_journal
from magicwan.models.tunnels import IPsecTunnel
from magicwan.ratelimit import CLOUDFLARE_BUDGET, RateLimiter
from magicwan.rotation import DEFAULT_BATCH_SIZE

__all__ = [
    "Cost",
    "Estimate",
    "already_rotated",
    "dry_run",
    "estimate",
    "paced_seconds",
    "refuse_reuse",
    "select",
]


def select(
    args: argparse.Namespace, account: str, found: list[IPsecTunnel], explicit: list[str]
) -> list[IPsecTunnel]:
    """The tunnels the options select, in the order given (ids) or listed (the rest)."""
    by_id = {tunnel.id.lower(): tunnel for tunnel in found}
    unknown = [t for t in dict.fromkeys(explicit) if t.lower() not in by_id]
    if unknown:
        # dict.fromkeys: ids not shown (a file of PSKs given as --from-file) are said once.
        named = dict.fromkeys(shown_id(t) for t in unknown[:5])
        shown = ", ".join(named) + (", ..." if len(unknown) > 5 else "")
        raise UsageError(
            f"not IPsec tunnels of {shown_id(account, 'account')}: {shown}",
            hints=["'magicwan tunnels list' shows the account's tunnels"],
        )
    chosen: dict[str, IPsecTunnel] = {t.lower(): by_id[t.lower()] for t in explicit}
    for tunnel in found:
        name = tunnel.name or ""
        if args.all or any(fnmatch.fnmatchcase(name, glob) for glob in args.name):
            chosen.setdefault(tunnel.id.lower(), tunnel)
    if args.exclude:
        chosen = {
            key: tunnel
            for key, tunnel in chosen.items()
            if not any(
                fnmatch.fnmatchcase(tunnel.name or "", glob) or fnmatch.fnmatchcase(tunnel.id, glob)
                for glob in args.exclude
            )
        }
    return list(chosen.values())


def already_rotated(journal: str, account: str, selected: list[IPsecTunnel]) -> list[IPsecTunnel]:
    try:
        records = read_journal(journal)
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    key = account.lower()
    done = []
    for tunnel in selected:
        record = records.get((key, tunnel.id.lower()))
        if record is not None and record.rotated:
            done.append(tunnel)
    return done


def refuse_reuse(journal: str, done: int, selected: int) -> None:
    if done == selected:
        what = (
            f"the journal {journal} already records a new PSK for every one of the {selected} "
            "selected tunnels: this run would rotate nothing"
        )
    else:
        what = (
            f"the journal {journal} already records new PSKs for {done} of the {selected} "
            "selected tunnels: they would be skipped, not rotated"
        )
    raise UsageError(
        what,
        hints=[
            "to finish the run that journal records, add --resume",
            "to rotate again, use a new journal; --journal-dir DIR makes a fresh one per run",
        ],
    )


@attrs.frozen(kw_only=True)
class Cost:
    """What one method would spend: requests of the budget, and seconds of the rate
    limiter's pace (None without a client-side limit)."""

    requests: int
    seconds: float | None

    def text(self) -> str:
        requests = f"{self.requests:,} request{'' if self.requests == 1 else 's'}"
        if self.seconds is None:
            return requests
        if self.seconds < 0.5:
            return f"{requests}, no wait for the rate limit"
        return f"~{self.seconds:,.0f} s and {requests}"

    def to_json(self) -> dict[str, Any]:
        seconds = None if self.seconds is None else round(self.seconds, 1)
        return {"requests": self.requests, "seconds": seconds}


@attrs.frozen(kw_only=True)
class Estimate:
    """What rotating ``tunnels`` would cost with either method."""

    tunnels: int
    generate: Cost
    set: Cost
    batch_size: int
    rate_limit: tuple[int, float] | None

    def text(self) -> str:
        budget = f"{CLOUDFLARE_BUDGET[0]:,}-per-{CLOUDFLARE_BUDGET[1]:g}-s"
        if self.rate_limit is None:
            pace = "no client-side rate limit (--rate-limit off): no pace to estimate from"
        else:
            pace = f"paced at {self.rate_limit[0]:,} per {self.rate_limit[1]:g} s"
        return (
            f"{self.tunnels:,} tunnels: generate {self.generate.text()}; set "
            f"{self.set.text()} (batches of {self.batch_size}); of the {budget} API "
            f"budget, {pace} (the tunnel list first; latency and read-backs add)"
        )

    def to_json(self) -> dict[str, Any]:
        limit = self.rate_limit
        return {
            "tunnels": self.tunnels,
            "budget": {"requests": CLOUDFLARE_BUDGET[0], "seconds": CLOUDFLARE_BUDGET[1]},
            "rate_limit": None if limit is None else {"requests": limit[0], "seconds": limit[1]},
            "generate": self.generate.to_json(),
            "set": {**self.set.to_json(), "batch_size": self.batch_size},
        }


def paced_seconds(limiter: RateLimiter, requests: int) -> float | None:
    """How long a limiter with ``limiter``'s settings, its budget unspent, keeps the last
    of ``requests`` waiting; None when it does not pace (no limit)."""
    if not limiter.limit:
        return None
    fresh = RateLimiter(limiter.limit, limiter.period, clock=lambda: 0.0, headroom=limiter.headroom)
    wait = 0.0
    for _ in range(requests):
        wait = fresh.reserve()  # at a standstill: each later request waits longer
    return wait


def estimate(tunnels: int, limiter: RateLimiter, batch_size: int) -> Estimate:
    """The cost of rotating ``tunnels`` by either method; the tunnel list goes first."""
    batches = math.ceil(tunnels / batch_size)
    rate_limit = None if not limiter.limit else (limiter.limit, limiter.period)
    return Estimate(
        tunnels=tunnels,
        generate=Cost(requests=tunnels, seconds=paced_seconds(limiter, 1 + tunnels)),
        set=Cost(requests=batches, seconds=paced_seconds(limiter, 1 + batches)),
        batch_size=batch_size,
        rate_limit=rate_limit,
    )


def dry_run(
    console: Console,
    args: argparse.Namespace,
    selected: list[IPsecTunnel],
    done: list[IPsecTunnel],
    limiter: RateLimiter,
) -> int:
    skipped = {tunnel.id.lower() for tunnel in done} if args.resume else set()
    for tunnel in selected:
        skip = tunnel.id.lower() in skipped
        if args.json:
            console.json(
                {
                    "event": "tunnel",
                    "tunnel_id": tunnel.id,
                    "name": tunnel.name,
                    "state": "would_skip" if skip else "would_rotate",
                }
            )
        else:
            note = "  (skipped: already rotated in the journal)" if skip else ""
            console.data(f"{tunnel.id}  {tunnel.name or '-'}{note}")
    rotating = len(selected) - len(skipped)
    where = f"; {len(skipped)} already in the journal would be skipped" if skipped else ""
    if args.journal_dir is not None:
        where += f"; a new journal would be made in {args.journal_dir}"
    console.say(
        f"dry run: {rotating} tunnel(s) would be rotated{where}. Only the tunnel list was "
        "requested; nothing changed."
    )
    cost = estimate(rotating, limiter, getattr(args, "batch_size", DEFAULT_BATCH_SIZE))
    if rotating:
        console.say(f"estimate: {cost.text()}")
    if args.json:
        console.json(
            {
                "event": "summary",
                "dry_run": True,
                "would_rotate": rotating,
                "would_skip": len(skipped),
                "estimate": cost.to_json(),
            }
        )
    return ExitStatus.OK
