"""Structuring PSK results with the one cattrs converter."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from magicwan import AppliedPSK, IPsecTunnel, PSKGenerateResult, PSKMetadata, PSKSetResult
from magicwan._converter import converter, structure
from magicwan._envelope import decode_envelope  # private: the converter's input is its output
from magicwan.errors import UnexpectedResponseError
from magicwan.internal.timestamps import parse_datetime
from tests.support.constants import PSK, TUNNEL
from tests.support.samples import load_sample


def _result(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "ipsec_tunnel_id": TUNNEL,
        "psk": PSK,
        "psk_metadata": {"last_generated_on": "2017-06-14T05:20:00Z"},
    }
    data.update(overrides)
    return data


def test_spec_example_structures() -> None:
    model = structure(decode_envelope(*load_sample("psk_generate_200")), PSKGenerateResult)
    assert model == PSKGenerateResult(
        ipsec_tunnel_id=TUNNEL,
        psk=PSK,
        psk_metadata=PSKMetadata(last_generated_on=datetime(2017, 6, 14, 5, 20, tzinfo=UTC)),
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2017-06-14T05:20:00Z", datetime(2017, 6, 14, 5, 20, tzinfo=UTC)),
        ("2017-06-14T05:20:00+00:00", datetime(2017, 6, 14, 5, 20, tzinfo=UTC)),
        (
            "2017-06-14T07:20:00+02:00",
            datetime(2017, 6, 14, 7, 20, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("2017-06-14T05:20:00", datetime(2017, 6, 14, 5, 20, tzinfo=UTC)),  # naive -> UTC
        ("2017-06-14T05:20:00.5Z", datetime(2017, 6, 14, 5, 20, 0, 500000, tzinfo=UTC)),
        (
            "2024-11-02T08:15:30.123456789Z",
            datetime(2024, 11, 2, 8, 15, 30, 123456, tzinfo=UTC),
        ),
        (
            "2024-11-02T08:15:30.1234567-05:00",
            datetime(2024, 11, 2, 8, 15, 30, 123456, tzinfo=timezone(timedelta(hours=-5))),
        ),
    ],
)
def test_timestamps_are_timezone_aware(raw: str, expected: datetime) -> None:
    model = structure(_result(psk_metadata={"last_generated_on": raw}), PSKGenerateResult)
    assert model.psk_metadata is not None
    when = model.psk_metadata.last_generated_on
    assert when == expected
    assert when is not None
    assert when.tzinfo is not None
    assert when.utcoffset() == expected.utcoffset()


def test_nanosecond_sample() -> None:
    model = structure(decode_envelope(*load_sample("nanosecond_timestamp_200")), PSKGenerateResult)
    assert model.psk_metadata is not None
    assert model.psk_metadata.last_generated_on == datetime(
        2024, 11, 2, 8, 15, 30, 123456, tzinfo=UTC
    )


def test_parse_datetime_rejects_non_strings_and_garbage() -> None:
    with pytest.raises(TypeError):
        parse_datetime(1497417600)
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_datetime("yesterday")


def test_omitted_fields_default_to_none() -> None:
    model = structure({"ipsec_tunnel_id": TUNNEL}, PSKGenerateResult)
    assert model.psk is None
    assert model.psk_metadata is None
    assert structure(_result(psk_metadata={}), PSKGenerateResult).psk_metadata == PSKMetadata()
    assert structure(_result(psk=None, psk_metadata=None), PSKGenerateResult).psk is None


def test_unknown_fields_are_ignored() -> None:
    model = structure(decode_envelope(*load_sample("unknown_fields_200")), PSKGenerateResult)
    assert model.psk == PSK
    assert model.psk_metadata is not None
    assert model.psk_metadata.last_generated_on == datetime(
        2024, 11, 2, 8, 15, 30, 123456, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("result", "path"),
    [
        (_result(psk=12345), "result.psk"),
        (_result(psk=True), "result.psk"),
        (_result(ipsec_tunnel_id=["x"]), "result.ipsec_tunnel_id"),
        ({"psk": PSK}, "result.ipsec_tunnel_id"),
    ],
)
def test_wrong_types_name_the_path_not_the_value(result: dict[str, Any], path: str) -> None:
    with pytest.raises(UnexpectedResponseError) as info:
        structure(result, PSKGenerateResult)
    text = str(info.value)
    assert path in text
    assert PSK not in text
    assert "SECRETISH" not in text
    assert "12345" not in text
    assert info.value.__cause__ is None
    assert info.value.__context__ is None  # no chained exception keeps the raw value


@pytest.mark.parametrize(
    "stamp",
    [
        "yesterday-SECRETISH",
        1497417600,  # an epoch number
        "2017-06-14 05:20:00.123456789 +0000 UTC",  # Go's time.String()
        ["SECRETISH"],
        {"SECRETISH": 1},
    ],
)
def test_a_stamp_that_cannot_be_read_never_costs_the_psk(
    stamp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="magicwan")
    model = structure(_result(psk_metadata={"last_generated_on": stamp}), PSKGenerateResult)
    assert model.psk == PSK
    assert model.psk_metadata == PSKMetadata(last_generated_on=None)
    assert "not RFC 3339" in caplog.text
    assert "SECRETISH" not in caplog.text


# Metadata of the wrong type: psk_metadata flattened to its stamp, or not an object at all;
# ipsec_id as a list or a number. Each is left unset; the PSK is kept.
_ODD_METADATA = [
    {"psk_metadata": "SECRETISH-2030-01-01T00:00:00Z"},
    {"psk_metadata": ["SECRETISH"]},
    {"psk_metadata": 1497417600},
    {"ipsec_id": ["SECRETISH.example"]},
    {"ipsec_id": 12345},
    {"ipsec_id": {"SECRETISH": 1}},
]


@pytest.mark.parametrize("odd", _ODD_METADATA)
def test_metadata_of_the_wrong_type_never_costs_the_psk(
    odd: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="magicwan")
    model = structure(_result(**odd), PSKGenerateResult)
    assert model.psk == PSK
    assert model.ipsec_tunnel_id == TUNNEL
    [name] = odd
    assert getattr(model, name) is None
    assert f"ignoring {name} of the wrong type" in caplog.text
    assert "SECRETISH" not in caplog.text
    assert "12345" not in caplog.text


@pytest.mark.parametrize("odd", _ODD_METADATA)
def test_metadata_of_the_wrong_type_never_costs_an_applied_psk(
    odd: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="magicwan")
    answer = {"successfully_applied_psks": {TUNNEL: _result(**odd)}}
    applied = structure(answer, PSKSetResult).applied[TUNNEL]
    assert isinstance(applied, AppliedPSK)
    assert applied.psk == PSK
    assert applied.ipsec_tunnel_id == TUNNEL
    [name] = odd
    assert getattr(applied, name) is None
    assert f"ignoring {name} of the wrong type" in caplog.text
    assert "SECRETISH" not in caplog.text


def test_metadata_leniency_leaves_the_psk_and_the_tunnel_id_strict() -> None:
    # ipsec_tunnel_id and psk are what the PSK is for: of the wrong type, the answer is
    # refused (test_wrong_types_name_the_path_not_the_value), odd metadata or not.
    for bad in ({"psk": ["x"]}, {"ipsec_tunnel_id": 5}):
        with pytest.raises(UnexpectedResponseError):
            structure(_result(ipsec_id=["x"], **bad), PSKGenerateResult)
    for bad in ({"psk": 5}, {"ipsec_tunnel_id": ["x"]}):
        answer = {"successfully_applied_psks": {TUNNEL: _result(psk_metadata="x", **bad)}}
        with pytest.raises(UnexpectedResponseError, match=f"result.applied.*{next(iter(bad))}"):
            structure(answer, PSKSetResult)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2017-06-14t05:20:00z", datetime(2017, 6, 14, 5, 20, tzinfo=UTC)),
        ("2017-06-14 05:20:00Z", datetime(2017, 6, 14, 5, 20, tzinfo=UTC)),
        ("2017-06-14T05:20:00.123z", datetime(2017, 6, 14, 5, 20, 0, 123000, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        (
            "2017-06-14T05:20:00-00:30",
            datetime(2017, 6, 14, 5, 20, tzinfo=timezone(timedelta(minutes=-30))),
        ),
    ],
)
def test_rfc3339_in_full(raw: str, expected: datetime) -> None:
    parsed = parse_datetime(raw)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "raw", ["2017-06-14", "2017-13-14T05:20:00Z", "2017-06-14T05:20:00+24:00", "05:20:00Z"]
)
def test_not_rfc3339(raw: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_datetime(raw)


def test_wrong_types_sample() -> None:
    with pytest.raises(UnexpectedResponseError) as info:
        structure(decode_envelope(*load_sample("result_wrong_types_200")), PSKGenerateResult)
    assert "result.psk" in str(info.value)
    assert "yesterday" not in str(info.value)


@pytest.mark.parametrize("result", [None, [], "psk", 5, [_result()]])
def test_result_that_is_not_an_object(result: Any) -> None:
    with pytest.raises(UnexpectedResponseError, match="expected an object"):
        structure(result, PSKGenerateResult)


def test_psk_is_not_in_repr() -> None:
    model = structure(_result(), PSKGenerateResult)
    assert PSK not in repr(model)
    assert PSK not in str(model)
    assert TUNNEL in repr(model)
    assert model.psk == PSK


def test_models_are_frozen_and_keyword_only() -> None:
    model = structure(_result(), PSKGenerateResult)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        model.psk = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        PSKGenerateResult(TUNNEL)  # type: ignore[call-arg]


def test_datetimes_unstructure_as_rfc3339() -> None:
    meta = PSKMetadata(last_generated_on=datetime(2017, 6, 14, 5, 20, tzinfo=UTC))
    assert converter.unstructure(meta) == {"last_generated_on": "2017-06-14T05:20:00Z"}


def test_a_tunnel_carries_its_ipsec_id() -> None:
    ipsec_id = f"{TUNNEL}.023e105f4ecef8ad9ca31a8372d0c353.ipsec.cloudflare.com"
    assert structure({"id": TUNNEL, "ipsec_id": ipsec_id}, IPsecTunnel).ipsec_id == ipsec_id
    assert structure({"id": TUNNEL}, IPsecTunnel).ipsec_id is None


def test_a_refusal_reason_that_is_not_a_string_is_kept_as_its_json_text() -> None:
    answer = {"unapplied_psks": {TUNNEL: {"code": 1004, "message": "too short"}}}
    result = structure(answer, PSKSetResult)
    assert result.unapplied == {TUNNEL: '{"code": 1004, "message": "too short"}'}
