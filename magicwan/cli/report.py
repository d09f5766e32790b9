"""What a run says about its tunnels: JSON lines, progress lines, failure groups, hints, summary.

Pure formatting and counting: nothing here writes or sends. Text made from anything a
server wrote is escaped by the console when it is printed; JSON escapes itself.

A hint is given for a failure only when it helps: "rerun with ``--resume``" only for
failures a rerun can fix (a 5xx, a timeout, a 429, a delivery that did not go through);
403, 404 and unknown-route answers get a hint about the token, the account or the base
URL instead.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from magicwan.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    DeliveryError,
    NotAppliedError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestAbandonedError,
    UnprocessableEntityError,
)
from magicwan.internal.redaction import describe_error as describe
from magicwan.internal.timestamps import format_datetime
from magicwan.journal import JournalError
from magicwan.models.psk import PSKGenerateResult
from magicwan.models.tunnels import IPsecTunnel
from magicwan.ratelimit import CLOUDFLARE_BUDGET
from magicwan.rotation import OutcomeState

__all__ = [
    "FailureGroup",
    "Tally",
    "describe",
    "error_json",
    "hint",
    "is_access_error",
    "names_of",
    "outcome_json",
    "rerun_fixes",
    "stamp_text",
]

#: Cloudflare codes that mean "these credentials are not accepted" (missing, malformed,
#: unknown key or token).
_AUTH_CODES = frozenset({6111, 9103, 9106, 10000})
_NO_ROUTE = 7000
_UNKNOWN_ACCOUNT = 7003
_EXAMPLES = 3  # tunnel ids shown per failure group
_BUDGET = f"{CLOUDFLARE_BUDGET[0]:,} requests per {CLOUDFLARE_BUDGET[1]:g} s"


def _codes(exc: BaseException) -> frozenset[int]:
    return frozenset(exc.codes) if isinstance(exc, APIError) else frozenset()


def is_access_error(exc: BaseException) -> bool:
    """Cloudflare refused the credentials, their permissions, the account or the route:
    no tunnel can succeed, and a rerun of the same command cannot help."""
    if isinstance(exc, AuthenticationError | PermissionDeniedError):
        return True
    return bool(_codes(exc) & (_AUTH_CODES | {_NO_ROUTE, _UNKNOWN_ACCOUNT}))


_AUTH_HINT = (
    "Cloudflare did not accept the credentials: check CLOUDFLARE_API_TOKEN "
    "(or CLOUDFLARE_EMAIL and CLOUDFLARE_API_KEY)"
)
#: Hints by Cloudflare error code, in order; then by error type, in order.
_CODE_HINTS: tuple[tuple[frozenset[int], str], ...] = (
    (_AUTH_CODES, _AUTH_HINT),
    (
        frozenset({_NO_ROUTE}),
        "no such API route: check --base-url or CLOUDFLARE_BASE_URL "
        "(Cloudflare's is https://api.cloudflare.com/client/v4)",
    ),
    (
        frozenset({_UNKNOWN_ACCOUNT}),
        "Cloudflare does not know this account for these credentials: check ACCOUNT "
        "or CLOUDFLARE_ACCOUNT_ID (ACCOUNT is the first positional argument)",
    ),
)
_TYPE_HINTS: tuple[tuple[type[BaseException], str], ...] = (
    (
        PermissionDeniedError,
        "the credentials lack a permission: the token needs read and edit access to "
        "Magic WAN on this account",
    ),
    (NotFoundError, "the tunnel is not in this account (deleted?): see 'magicwan tunnels list'"),
    (
        RateLimitError,
        f"Cloudflare's rate limit ({_BUDGET} per user; another program may share it): "
        "wait, then rerun with --resume, or raise --max-retry-after",
    ),
    (JournalError, "the journal could not be written (disk full? permissions?)"),
    (
        RequestAbandonedError,
        "the run stopped while the request was in flight: rerun with --resume (the "
        "journal makes it read the tunnel back before anything else)",
    ),
    (APIConnectionError, "Cloudflare could not be reached: check the network, a proxy, DNS"),
    (NotAppliedError, "Cloudflare refused this tunnel's PSK (its reason is above)"),
)


def hint(exc: BaseException) -> str | None:
    """What to do about ``exc``, when there is something better than "rerun"."""
    if isinstance(exc, AuthenticationError):
        return _AUTH_HINT
    codes = _codes(exc)
    for wanted, text in _CODE_HINTS:
        if codes & wanted:
            return text
    if isinstance(exc, DeliveryError):
        return _DELIVERY_HINTS.get(exc.reason)
    for cls, text in _TYPE_HINTS:
        if isinstance(exc, cls):
            return text
    return None


_DELIVERY_HINTS = {
    "unreachable": "the delivery target could not be reached: is charon running, and is "
    "--deliver-strongswan's socket path right?",
    "authentication_failed": "IKE authentication with the new PSK failed: check the "
    "router's identities and the tunnel's ipsec_id",
    "misconfigured": "a fact the deliverer needs (the tunnel's name, its ipsec_id) is unknown",
    "not_started": "the --deliver-exec program could not be started",
    "exit_status": "the --deliver-exec program failed (the end of its stderr is above)",
    "timeout": "the delivery did not finish in time: check the target, or raise --deliver-timeout",
    "rejected": "charon refused the request (its answer is above)",
    "stopped": "the run stopped before this delivery",
}


def rerun_fixes(exc: BaseException | None) -> bool:
    """Whether running again (``--resume``) can fix this failure."""
    if exc is None:
        return True
    if is_access_error(exc) or isinstance(exc, NotFoundError):
        return False
    if isinstance(exc, DeliveryError):
        return exc.reason not in ("misconfigured", "not_started")
    return not isinstance(exc, BadRequestError | UnprocessableEntityError | NotAppliedError)


def error_json(exc: BaseException | None) -> dict[str, Any] | None:
    """An error as JSON: type, message, HTTP status, Cloudflare codes, cf-ray id, reason."""
    if exc is None:
        return None
    data: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": str(exc),
        "status": getattr(exc, "status", None),
        "codes": sorted(_codes(exc)) if isinstance(exc, APIError) else [],
        "ray_id": getattr(exc, "ray_id", None),
    }
    if isinstance(exc, DeliveryError | NotAppliedError):
        data["reason"] = exc.reason
    return data


def stamp_text(holder: PSKGenerateResult | IPsecTunnel | None) -> str | None:
    """When a result's (or a tunnel's) PSK was made, as Cloudflare writes it; or None."""
    meta = holder.psk_metadata if holder is not None else None
    stamp = meta.last_generated_on if meta is not None else None
    return format_datetime(stamp) if stamp is not None else None


def outcome_json(outcome: Any, *, name: str | None, show_psk: bool) -> dict[str, Any]:
    """One tunnel's outcome as a JSON object: the PSK only with ``show_psk``."""
    result: PSKGenerateResult | None = outcome.result
    data: dict[str, Any] = {
        "event": "tunnel",
        "tunnel_id": outcome.tunnel_id,
        "name": name,
        "ok": outcome.ok,
        "state": outcome.state.value,
        "attempts": outcome.attempts,
        "verified": getattr(outcome, "verified", False),
        "unverified": getattr(outcome, "unverified", None),
        "delivered": getattr(outcome, "delivered", None),
        "outcome_unknown": getattr(outcome, "outcome_unknown", False),
        "last_generated_on": stamp_text(result),
        "ipsec_id": result.ipsec_id if result is not None else None,
        "error": error_json(outcome.error),
    }
    if show_psk:
        data["psk"] = result.psk if result is not None else None
    return data


# -- failure groups ------------------------------------------------------------------------

_RAY = re.compile(r"\s*\(cf-ray [^)]*\)")
_RETRY_AFTER = re.compile(r"\s*\(retry after [^)]*\)")


@attrs.define
class FailureGroup:
    """Failures with the same error (same type and text, tunnel ids and ray ids aside)."""

    state: OutcomeState
    error: BaseException | None
    example: str
    count: int = 0
    tunnels: list[str] = attrs.field(factory=list)

    @property
    def hint(self) -> str | None:
        return hint(self.error) if self.error is not None else None

    @property
    def rerun_fixes(self) -> bool:
        return rerun_fixes(self.error)

    def text(self) -> str:
        """``ErrorType: message`` (escaped when printed)."""
        return describe(self.error) if self.error is not None else self.state.value

    @property
    def names_its_example(self) -> bool:
        """Whether the text names its first tunnel: the others' texts name their own (the
        group's key sets tunnel ids aside), so the text is shown as that tunnel's."""
        return self.count > 1 and self.example.lower() in self.text().lower()

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "state": self.state.value,
            "error": error_json(self.error),
            "example_tunnel_id": self.example,
            "hint": self.hint,
            "rerun_fixes": self.rerun_fixes,
        }


def _group_key(outcome: Any) -> tuple[str, str, str]:
    exc = outcome.error
    if exc is None:
        return (outcome.state.value, "", "")
    if isinstance(exc, RateLimitError):  # the server's 429 and the cooldown's are one cause
        return (outcome.state.value, type(exc).__name__, "")
    message = _RETRY_AFTER.sub("", _RAY.sub("", str(exc)))
    message = re.sub(re.escape(outcome.tunnel_id), "<tunnel>", message, flags=re.IGNORECASE)
    return (outcome.state.value, type(exc).__name__, message)


# -- the tally -------------------------------------------------------------------------------


@attrs.define
class Tally:
    """What a run did, tunnel by tunnel, for the summary and the exit status."""

    requested: int
    delivering: bool = False
    states: collections.Counter[OutcomeState] = attrs.field(factory=collections.Counter)
    verified: int = 0
    delivered: int = 0
    undelivered: int = 0
    groups: dict[tuple[str, str, str], FailureGroup] = attrs.field(factory=dict)
    unrecorded: list[str] = attrs.field(factory=list)
    access_failures: int = 0
    #: Outcomes that carried a PSK the tunnel may hold.
    carried: int = 0

    @property
    def seen(self) -> int:
        return sum(self.states.values())

    def count(self, state: OutcomeState) -> int:
        return self.states[state]

    @property
    def not_attempted(self) -> int:
        """Tunnels never started: halted, stopped, interrupted."""
        return self.states[OutcomeState.NOT_ATTEMPTED] + (self.requested - self.seen)

    @property
    def failed(self) -> int:
        return self.states[OutcomeState.FAILED]

    @property
    def done(self) -> int:
        """Tunnels whose new PSK is live and recorded (or validated), this run or before."""
        return sum(
            self.states[s]
            for s in (OutcomeState.ROTATED, OutcomeState.SKIPPED, OutcomeState.VALIDATED)
        )

    def add(self, outcome: Any) -> FailureGroup | None:
        """Count ``outcome``; for a failure, its group and whether it is the group's first
        (``group.count == 1``)."""
        self.states[outcome.state] += 1
        if outcome.psk is not None and outcome.state is not OutcomeState.VALIDATED:
            self.carried += 1
        if outcome.verified:
            self.verified += 1
        delivered = outcome.delivered
        if delivered is True:
            self.delivered += 1
        elif delivered is False:
            self.undelivered += 1
        if outcome.state is OutcomeState.UNRECORDED:
            self.unrecorded.append(outcome.tunnel_id)
        if outcome.ok:
            return None
        if outcome.state is OutcomeState.FAILED and is_access_error(outcome.error):
            self.access_failures += 1
        key = _group_key(outcome)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = FailureGroup(
                state=outcome.state, error=outcome.error, example=outcome.tunnel_id
            )
        group.count += 1
        if len(group.tunnels) < _EXAMPLES:
            group.tunnels.append(outcome.tunnel_id)
        return group

    @property
    def rerun_helps(self) -> bool:
        """Some failure (or a tunnel not attempted) that a rerun with ``--resume`` fixes."""
        if self.requested > self.seen:
            return True
        return any(g.rerun_fixes for g in self.groups.values())

    def rows(self, *, validate_only: bool) -> list[tuple[str, int]]:
        """The summary table's counts."""
        if validate_only:
            rows = [("validated", self.count(OutcomeState.VALIDATED))]
        else:
            rows = [
                ("rotated", self.count(OutcomeState.ROTATED)),
                ("skipped (already in the journal)", self.count(OutcomeState.SKIPPED)),
                ("verified by read-back", self.verified),
            ]
        rows.append(("failed", self.failed))
        rows.append(("not attempted", self.not_attempted))
        if self.unrecorded:
            rows.append(("UNRECORDED (live, not in the journal)", len(self.unrecorded)))
        if self.delivering:
            rows += [
                ("delivered", self.delivered),
                ("undelivered", self.undelivered),
                ("delivery not attempted", self.requested - self.delivered - self.undelivered),
            ]
        return rows

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "requested": self.requested,
            "rotated": self.count(OutcomeState.ROTATED),
            "skipped": self.count(OutcomeState.SKIPPED),
            "validated": self.count(OutcomeState.VALIDATED),
            "verified": self.verified,
            "failed": self.failed,
            "not_attempted": self.not_attempted,
            "unrecorded": len(self.unrecorded),
        }
        if self.delivering:
            data["delivered"] = self.delivered
            data["undelivered"] = self.undelivered
            data["delivery_not_attempted"] = self.requested - self.delivered - self.undelivered
        data["failures"] = [g.to_json() for g in self.groups.values()]
        return data


def names_of(tunnels: Iterable[Any]) -> Mapping[str, str | None]:
    """Tunnel id (lowercase) -> name, from tunnel objects."""
    return {t.id.lower(): t.name for t in tunnels}
