"""What the command line says about outcomes (``magicwan.cli.report``): JSON, failure groups,
hints only where they help, the tally."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from magicwan.cli.report import Tally, error_json, hint, is_access_error, outcome_json, rerun_fixes
from magicwan.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    DeliveryError,
    ErrorDetail,
    InternalServerError,
    MagicWANError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RotationHaltedError,
)
from magicwan.journal import JournalError
from magicwan.models.psk import PSKGenerateResult, PSKMetadata
from magicwan.rotation import OutcomeState, RotationFailure, RotationSuccess, Validated

A, B, C = "a" * 32, "b" * 32, "c" * 32
PSK = "pskREPORT0123456789abcdefghijklm"


def api(
    cls: type[APIError], status: int, code: int, message: str = "m", ray: str = "r1"
) -> APIError:
    return cls(status, [ErrorDetail(code, message)], ray_id=ray)


def success(tunnel: str = A) -> RotationSuccess:
    result = PSKGenerateResult(
        ipsec_tunnel_id=tunnel,
        psk=PSK,
        psk_metadata=PSKMetadata(last_generated_on=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ipsec_id=f"{tunnel}.x.ipsec.cloudflare.com",
    )
    return RotationSuccess(tunnel_id=tunnel, state=OutcomeState.ROTATED, result=result, attempts=2)


def failure(
    tunnel: str, error: MagicWANError, state: OutcomeState = OutcomeState.FAILED
) -> RotationFailure:
    return RotationFailure(tunnel_id=tunnel, state=state, error=error)


def test_outcome_json_has_every_field_and_the_psk_only_when_asked() -> None:
    data = outcome_json(success(), name="site-1", show_psk=False)
    assert data == {
        "event": "tunnel",
        "tunnel_id": A,
        "name": "site-1",
        "ok": True,
        "state": "rotated",
        "attempts": 2,
        "verified": False,
        "unverified": None,
        "delivered": None,
        "outcome_unknown": False,
        "last_generated_on": "2025-01-02T03:04:05Z",
        "ipsec_id": f"{A}.x.ipsec.cloudflare.com",
        "error": None,
    }
    assert outcome_json(success(), name=None, show_psk=True)["psk"] == PSK
    validated = Validated(tunnel_id=A, result=PSKGenerateResult(ipsec_tunnel_id=A))
    assert outcome_json(validated, name=None, show_psk=True)["state"] == "validated"


def test_error_json_carries_type_status_codes_ray_and_reason() -> None:
    error = api(NotFoundError, 404, 1002, "ipsec_tunnel not found", ray="abc-EMU")
    assert error_json(error) == {
        "type": "NotFoundError",
        "message": "HTTP 404: 1002: ipsec_tunnel not found (cf-ray abc-EMU)",
        "status": 404,
        "codes": [1002],
        "ray_id": "abc-EMU",
    }
    delivery = error_json(DeliveryError("x", reason="timeout", tunnel_id=A))
    assert delivery is not None
    assert (delivery["reason"], delivery["status"], delivery["codes"]) == ("timeout", None, [])


@pytest.mark.parametrize(
    ("error", "access", "fixes", "advice"),
    [
        (api(AuthenticationError, 401, 10000), True, False, "did not accept the credentials"),
        (api(PermissionDeniedError, 403, 10000), True, False, "did not accept the credentials"),
        (api(PermissionDeniedError, 403, 9109), True, False, "lack a permission"),
        (api(BadRequestError, 400, 9106), True, False, "did not accept the credentials"),
        (api(NotFoundError, 404, 7003), True, False, "check ACCOUNT"),
        (api(NotFoundError, 404, 7000), True, False, "check --base-url"),
        (api(NotFoundError, 404, 1002), False, False, "'magicwan tunnels list'"),
        (api(BadRequestError, 400, 1001), False, False, None),
        (api(InternalServerError, 500, 10001), False, True, None),
        (RateLimitError(429, retry_after=120), False, True, "--max-retry-after"),
        (APIConnectionError("reset"), False, True, "could not be reached"),
        (RotationHaltedError("halted"), False, True, None),
        (JournalError("disk full"), False, True, "disk full?"),
        (DeliveryError("x", reason="unreachable"), False, True, "is charon running"),
        (DeliveryError("x", reason="misconfigured"), False, False, "is unknown"),
        (DeliveryError("x", reason="exit_status"), False, True, "--deliver-exec program failed"),
    ],
)
def test_hints_and_what_a_rerun_fixes(
    error: Exception, access: bool, fixes: bool, advice: str | None
) -> None:
    assert is_access_error(error) is access
    assert rerun_fixes(error) is fixes
    given = hint(error)
    if advice is None:
        assert given is None
    else:
        assert given is not None
        assert advice in given


def test_identical_failures_form_one_group_whatever_their_tunnel_and_ray() -> None:
    tally = Tally(requested=5)
    first = tally.add(failure(A, api(InternalServerError, 500, 10001, "oops", ray="r1")))
    second = tally.add(failure(B, api(InternalServerError, 500, 10001, "oops", ray="r2")))
    other = tally.add(failure(C, api(NotFoundError, 404, 1002, "gone")))
    tally.add(failure(A, RateLimitError(429, retry_after=120.0)))
    tally.add(failure(B, RateLimitError(429, [ErrorDetail(None, "cooldown")], retry_after=99.5)))

    assert first is second
    assert first is not None
    assert (first.count, first.tunnels) == (2, [A, B])
    assert other is not None
    assert other.count == 1
    assert len(tally.groups) == 3  # 500s, the 404, every 429 together
    assert (tally.failed, tally.done) == (5, 0)
    assert [g["count"] for g in tally.to_json()["failures"]] == [2, 1, 2]


def test_the_tally_counts_states_deliveries_and_the_unrecorded() -> None:
    tally = Tally(requested=6, delivering=True)
    tally.add(
        RotationSuccess(
            tunnel_id=A, state=OutcomeState.ROTATED, result=success().result, delivered=True
        )
    )
    tally.add(
        RotationSuccess(
            tunnel_id=B, state=OutcomeState.SKIPPED, result=success().result, delivered=True
        )
    )
    undelivered = RotationFailure(
        tunnel_id=C,
        state=OutcomeState.UNDELIVERED,
        error=DeliveryError("x", reason="timeout", tunnel_id=C),
        result=success(C).result,
        delivered=False,
    )
    tally.add(undelivered)
    tally.add(
        RotationFailure(
            tunnel_id="d" * 32,
            state=OutcomeState.UNRECORDED,
            error=JournalError("disk full"),
            result=success("d" * 32).result,
        )
    )
    data = tally.to_json()
    assert (data["rotated"], data["skipped"], data["unrecorded"]) == (1, 1, 1)
    assert (data["delivered"], data["undelivered"], data["delivery_not_attempted"]) == (2, 1, 3)
    assert data["not_attempted"] == 2  # never seen
    assert tally.unrecorded == ["d" * 32]
    assert tally.rerun_helps
