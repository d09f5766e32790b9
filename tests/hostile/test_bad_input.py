"""Bad input, by property-based testing: refused with the documented error, nothing sent.
At the end, by hand: a PSK given where a tunnel id goes is refused without being echoed.

Every test talks to one emulator that runs on a private event loop (``asyncio.Runner``), so
hypothesis can drive plain synchronous tests and each example still reaches a real server when
its input is valid. "Nothing sent" is the emulator's request counter not moving.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import re
import string
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from magicwan import (
    AuthenticationError,
    InvalidInputError,
    MagicWAN,
    MagicWANError,
    NotFoundError,
    PermissionDeniedError,
    cli,
    new_psk,
)
from magicwan.emulator import Emulator, run
from tests.support.cli import cli_emulator
from tests.support.secrets import SECRET_EMAIL, SECRET_KEY, SECRET_TOKEN, assert_no_secret

T = TypeVar("T")

PROFILE = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_VALID_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))


class LoopEmulator:
    """An emulator served by a private event loop; ``call`` runs a coroutine on that loop."""

    def __init__(self, **options: Any) -> None:
        self.runner = asyncio.Runner()
        self._cm: AbstractAsyncContextManager[Emulator] = run(**options)
        self.emu = self.runner.run(self._cm.__aenter__())
        self.client = MagicWAN(
            api_token=self.emu.api_token, base_url=self.emu.base_url, max_retries=0, rate_limit=None
        )

    def call(self, factory: Callable[[], Awaitable[T]]) -> T:
        async def wrapped() -> T:
            return await factory()

        return self.runner.run(wrapped())

    @property
    def sent(self) -> int:
        return self.emu.state.requests.total

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.run(self._cm.__aexit__(None, None, None))
        self.runner.close()


@pytest.fixture(scope="module")
def loop_emu() -> Iterator[LoopEmulator]:
    emu = LoopEmulator(
        tunnels=3,
        seed=61,
        rate_limit=(1_000_000, 1.0),  # on, so answers carry Ratelimit headers the client reads
        api_token=SECRET_TOKEN,
        api_email=SECRET_EMAIL,
        api_key=SECRET_KEY,
    )
    yield emu
    emu.close()


def refused(
    loop_emu: LoopEmulator, action: Callable[[], Any], error: type[Exception] = InvalidInputError
) -> Exception:
    """``action`` (sync, or returning an awaitable) raises exactly ``error``; nothing was sent."""
    before = loop_emu.sent
    try:
        outcome = action()
        if isinstance(outcome, Awaitable):
            loop_emu.call(lambda: outcome)
    except Exception as caught:  # the exact type is asserted below
        exc = caught
    else:
        pytest.fail(f"accepted; expected {error.__name__}")
    if error is InvalidInputError:
        assert type(exc) is InvalidInputError, repr(exc)
        assert isinstance(exc, ValueError)
        assert isinstance(exc, MagicWANError)
    else:
        assert type(exc) is error, repr(exc)
    assert loop_emu.sent == before, "a request left the machine"
    return exc


# -- strategies -------------------------------------------------------------------------------

_NASTY = [
    "",
    ".",
    "..",
    "../..",
    "/",
    "a/b",
    "a?b",
    "a#b",
    "a%2Fb",
    "%2e%2e",
    " a",
    "a ",
    "a\tb",
    "a\nb",
    "a\x00",
    "a\x7f",
    "é",
    "\uff41",  # fullwidth a
    "٣",  # an Arabic-Indic digit: isdigit() but not ASCII
    "a" * 33,
    "A" * 1000,
    "abc\u200b",  # zero-width space
]

non_strings = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.just(b"abc"),
    st.just(bytearray(b"abc")),
)
bad_ids = st.one_of(
    st.sampled_from(_NASTY),
    st.text(max_size=40).filter(lambda s: _VALID_ID.fullmatch(s) is None),
    st.text(alphabet=string.ascii_letters + string.digits, min_size=33, max_size=80),
    non_strings,
)
good_ids = st.from_regex(_VALID_ID, fullmatch=True)

_CREDENTIAL_BAD_PART = st.one_of(
    st.sampled_from(
        [" ", "\n", "\r\n", "\t", "\x00", "\x7f", "é", "\u2028", "\ufeff", "\r\nX-Evil: 1"]
    ),
    st.text(min_size=1, max_size=5).filter(lambda s: any(not 0x21 <= ord(c) <= 0x7E for c in s)),
)
# A distinctive credential with something unsendable in it, so a leak is never a coincidence.
bad_credentials = st.builds(
    lambda a, bad, b: f"CRED{a}{bad}{b}",
    st.text(alphabet=_PRINTABLE, min_size=4, max_size=30),
    _CREDENTIAL_BAD_PART,
    st.text(alphabet=_PRINTABLE, max_size=30),
)
good_credentials = st.text(alphabet=_PRINTABLE, min_size=1, max_size=300)

bad_seconds = st.one_of(
    st.floats(max_value=0.0),
    st.just(math.nan),
    st.just(math.inf),
    st.just(-math.inf),
    st.integers(max_value=0),
    st.integers(min_value=10**309, max_value=10**400),  # beyond any float
    st.booleans(),
    st.text(max_size=5),
    st.none(),
    st.just(complex(1, 0)),
    st.sampled_from(["1", "1.0", b"1"]),
)
good_seconds = st.one_of(
    st.floats(min_value=1e-6, max_value=1e12, allow_nan=False, allow_infinity=False),
    st.integers(min_value=1, max_value=10**12),
)
bad_counts = st.one_of(
    st.integers(max_value=0),
    st.booleans(),
    st.floats(allow_nan=True),
    st.text(max_size=4),
    st.none(),
    st.sampled_from(["5", 2.0, 1.5]),
)
bad_non_negative = st.one_of(
    st.integers(max_value=-1), st.booleans(), st.floats(), st.text(max_size=3), st.none()
)
not_bools = st.one_of(
    st.integers(),
    st.none(),
    st.text(max_size=5),
    st.floats(),
    st.sampled_from(["true", "false", 0, 1, (), [], "", b""]),
)


def _make(**kwargs: Any) -> MagicWAN:
    options: dict[str, Any] = {"api_token": SECRET_TOKEN, "base_url": "http://127.0.0.1:9"}
    options.update(kwargs)
    return MagicWAN(**options)


# -- ids --------------------------------------------------------------------------------------


@PROFILE
@given(bad=bad_ids, where=st.sampled_from(["account", "tunnel"]))
def test_bad_ids_never_reach_the_wire(loop_emu: LoopEmulator, bad: Any, where: str) -> None:
    psk = loop_emu.client.tunnels.ipsec.psk
    ipsec = loop_emu.client.tunnels.ipsec
    account, tunnel = loop_emu.emu.account_id, loop_emu.emu.tunnel_ids[0]
    a, t = (bad, tunnel) if where == "account" else (account, bad)
    refused(loop_emu, lambda: psk.generate(a, t))
    refused(loop_emu, lambda: psk.generate(a, t, validate_only=True))
    refused(loop_emu, lambda: ipsec.get(a, t))
    if where == "account":
        refused(loop_emu, lambda: ipsec.list(bad))
        refused(loop_emu, lambda: psk.rotate(bad, [tunnel]))
    else:
        refused(loop_emu, lambda: psk.rotate(account, [tunnel, bad]))


@PROFILE
@given(account=good_ids, tunnel=good_ids)
def test_valid_ids_are_sent_once_and_answered(
    loop_emu: LoopEmulator, account: str, tunnel: str
) -> None:
    before = loop_emu.sent
    with pytest.raises(NotFoundError):  # unknown to the emulator, but a well-formed request
        loop_emu.call(lambda: loop_emu.client.tunnels.ipsec.psk.generate(account, tunnel))
    assert loop_emu.sent == before + 1
    result = loop_emu.call(
        lambda: loop_emu.client.tunnels.ipsec.psk.generate(
            loop_emu.emu.account_id, loop_emu.emu.tunnel_ids[0]
        )
    )
    assert result.psk == loop_emu.emu.state.current_psk(
        loop_emu.emu.account_id, loop_emu.emu.tunnel_ids[0]
    )


@PROFILE
@given(value=not_bools)
def test_validate_only_must_be_a_real_bool(loop_emu: LoopEmulator, value: Any) -> None:
    psk = loop_emu.client.tunnels.ipsec.psk
    account, tunnel = loop_emu.emu.account_id, loop_emu.emu.tunnel_ids[0]
    refused(loop_emu, lambda: psk.generate(account, tunnel, validate_only=value), TypeError)
    refused(loop_emu, lambda: psk.rotate(account, [tunnel], validate_only=value), TypeError)
    refused(loop_emu, lambda: _make(retry_unknown_outcome=value), TypeError)


# -- credentials ------------------------------------------------------------------------------


@PROFILE
@given(
    bad=bad_credentials,
    where=st.sampled_from(["api_token", "api_email", "api_key", "env_token", "env_key"]),
)
def test_bad_credentials_are_refused_and_never_echoed(
    loop_emu: LoopEmulator, bad: str, where: str
) -> None:
    cases: dict[str, dict[str, Any]] = {
        "api_token": {"api_token": bad},
        "api_email": {"api_email": bad, "api_key": SECRET_KEY},
        "api_key": {"api_email": SECRET_EMAIL, "api_key": bad},
        "env_token": {"environ": {"CLOUDFLARE_API_TOKEN": bad}},
        "env_key": {"environ": {"CLOUDFLARE_EMAIL": SECRET_EMAIL, "CLOUDFLARE_API_KEY": bad}},
    }
    options = cases[where]
    exc = refused(
        loop_emu, lambda: MagicWAN(base_url=loop_emu.emu.base_url, max_retries=0, **options)
    )
    texts = [str(exc), repr(exc), repr(exc.args)]
    assert_no_secret(texts, [bad, bad.strip(), "CRED", SECRET_KEY], where="credential error")


@PROFILE
@given(value=non_strings.filter(lambda v: v is not None))
def test_non_string_credentials(loop_emu: LoopEmulator, value: Any) -> None:
    refused(loop_emu, lambda: _make(api_token=value))
    refused(loop_emu, lambda: _make(api_token=None, api_email=SECRET_EMAIL, api_key=value))


@pytest.mark.parametrize(
    "options",
    [
        {"api_token": None},  # nothing at all
        {"api_token": SECRET_TOKEN, "api_key": SECRET_KEY},
        {"api_token": SECRET_TOKEN, "api_email": SECRET_EMAIL},
        {"api_token": None, "api_key": SECRET_KEY},
        {"api_token": None, "api_email": SECRET_EMAIL},
        {"api_token": None, "environ": {"CLOUDFLARE_API_TOKEN": "t", "CLOUDFLARE_API_KEY": "k"}},
        {"api_token": None, "environ": {"CLOUDFLARE_API_KEY": SECRET_KEY}},
    ],
)
def test_missing_or_ambiguous_credentials(loop_emu: LoopEmulator, options: dict[str, Any]) -> None:
    options.setdefault("environ", {})
    exc = refused(loop_emu, lambda: _make(**options))
    assert_no_secret([str(exc), repr(exc)], [SECRET_TOKEN, SECRET_KEY])


@PROFILE
@given(token=good_credentials, scheme=st.sampled_from(["token", "key"]))
def test_valid_credentials_are_sent_and_never_shown(
    loop_emu: LoopEmulator, token: str, scheme: str
) -> None:
    creds: dict[str, Any] = (
        {"api_token": token} if scheme == "token" else {"api_email": "x@y", "api_key": token}
    )
    client = MagicWAN(base_url=loop_emu.emu.base_url, max_retries=0, rate_limit=None, **creds)
    if len(token) >= 12:
        assert token not in repr(client)

    async def attempt() -> MagicWANError:
        async with client:
            with pytest.raises((AuthenticationError, PermissionDeniedError)) as info:
                await client.tunnels.ipsec.psk.generate(
                    loop_emu.emu.account_id, loop_emu.emu.tunnel_ids[0]
                )
        return info.value

    before = loop_emu.sent
    exc = loop_emu.call(attempt)
    assert loop_emu.sent == before + 1
    if len(token) >= 12:
        assert token not in str(exc)
        assert token not in repr(exc)


# -- base URLs --------------------------------------------------------------------------------

_BAD_URLS = [
    "",
    "api.cloudflare.com",
    "//api.cloudflare.com/client/v4",
    "http://api.cloudflare.com/client/v4",  # plain http off loopback
    "http://127.0.0.1.example.com/",
    "http://0.0.0.0:8080",
    "http://10.0.0.1",
    "ftp://api.cloudflare.com",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "https://",
    "https:///client/v4",
    "https://user:pass@api.cloudflare.com/client/v4",
    "https://token@api.cloudflare.com/client/v4",
    "https://api.cloudflare.com/client/v4?x=1",
    "https://api.cloudflare.com/client/v4#frag",
    "https://api.cloudflare.com/client/v4?",
    "https://api.cloudflare.com:0/client/v4",
    "https://api.cloudflare.com:99999/client/v4",
    "https://api.cloudflare.com:-1/",
    "https://api.cloudflare.com:abc/",
    "https://[::1/",
    "https://api.cloudflare.com/client v4",
    "https://api.cloudflare.com/client\n/v4",
    "https://api.cloudflare.com/\x00",
    "https://exämple.com/client/v4",
    " https://api.cloudflare.com/client/v4",
    "https://api.cloudflare.com/client/v4 ",
]


@pytest.mark.parametrize("url", _BAD_URLS)
def test_bad_base_urls(loop_emu: LoopEmulator, url: str) -> None:
    refused(loop_emu, lambda: _make(base_url=url))
    if url:  # an empty CLOUDFLARE_BASE_URL counts as unset
        env = {"CLOUDFLARE_BASE_URL": url}
        refused(loop_emu, lambda: _make(base_url=None, environ=env))


@PROFILE
@given(value=non_strings)
def test_non_string_base_urls(loop_emu: LoopEmulator, value: Any) -> None:
    assume(value is not None)
    refused(loop_emu, lambda: _make(base_url=value))


@PROFILE
@given(url=st.text(max_size=60))
def test_random_base_urls_are_refused_or_well_formed(loop_emu: LoopEmulator, url: str) -> None:
    """Arbitrary text: InvalidInputError, or an https (or loopback http) URL with no query."""
    before = loop_emu.sent
    try:
        client = _make(base_url=url)
    except InvalidInputError:
        assert loop_emu.sent == before
        return
    assert client.base_url.startswith(("https://", "http://"))
    assert "?" not in client.base_url
    assert "#" not in client.base_url


@PROFILE
@given(path=st.text(max_size=30))
def test_any_accepted_path_on_the_emulator_ends_in_a_typed_answer(
    loop_emu: LoopEmulator, path: str
) -> None:
    """A loopback base URL with an arbitrary path: refused, or sent and answered typed."""
    url = loop_emu.emu.root_url + "/" + path
    before = loop_emu.sent
    try:
        client = MagicWAN(api_token=SECRET_TOKEN, base_url=url, max_retries=0, timeout=5)
    except InvalidInputError:
        assert loop_emu.sent == before
        return

    async def attempt() -> object:
        async with client:
            try:
                return await client.tunnels.ipsec.psk.generate(
                    loop_emu.emu.account_id, loop_emu.emu.tunnel_ids[0]
                )
            except MagicWANError as exc:
                return exc

    outcome = loop_emu.call(attempt)
    assert not isinstance(outcome, InvalidInputError)
    assert loop_emu.sent <= before + 1


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/client/v4",
        "http://127.255.255.254:9",
        "http://localhost:9/",
        "http://[::1]:9/client/v4/",
        "https://127.0.0.1:9/client/v4",
        "https://api.cloudflare.com/client/v4",
        "HTTPS://API.CLOUDFLARE.COM/client/v4",
    ],
)
def test_good_base_urls(url: str) -> None:
    client = _make(base_url=url)
    assert not client.base_url.endswith("/")


# -- timeouts, retries, concurrency, rate limit -----------------------------------------------


@PROFILE
@given(value=bad_seconds, name=st.sampled_from(["timeout", "connect_timeout", "max_retry_after"]))
def test_bad_seconds(loop_emu: LoopEmulator, value: Any, name: str) -> None:
    refused(loop_emu, lambda: _make(**{name: value}))


@PROFILE
@given(value=good_seconds, name=st.sampled_from(["timeout", "connect_timeout", "max_retry_after"]))
def test_good_seconds_work(loop_emu: LoopEmulator, value: float, name: str) -> None:
    # A request must still work: a tiny timeout may time out, but only as a typed error.
    options: dict[str, Any] = {name: value}
    client = MagicWAN(
        api_token=SECRET_TOKEN, base_url=loop_emu.emu.base_url, max_retries=0, **options
    )

    async def attempt() -> object:
        async with client:
            try:
                return await client.tunnels.ipsec.psk.generate(
                    loop_emu.emu.account_id, loop_emu.emu.tunnel_ids[1], validate_only=True
                )
            except MagicWANError as exc:
                return exc

    outcome = loop_emu.call(attempt)
    if value >= 1:
        assert not isinstance(outcome, MagicWANError), repr(outcome)


@PROFILE
@given(value=bad_counts, name=st.sampled_from(["connection_limit", "concurrency"]))
def test_bad_counts(loop_emu: LoopEmulator, value: Any, name: str) -> None:
    if name == "connection_limit":
        refused(loop_emu, lambda: _make(connection_limit=value))
    else:
        psk = loop_emu.client.tunnels.ipsec.psk
        ids = loop_emu.emu.tunnel_ids
        refused(loop_emu, lambda: psk.rotate(loop_emu.emu.account_id, ids, concurrency=value))


@PROFILE
@given(value=bad_non_negative)
def test_bad_max_retries(loop_emu: LoopEmulator, value: Any) -> None:
    refused(loop_emu, lambda: _make(max_retries=value))


@PROFILE
@given(concurrency=st.integers(min_value=1, max_value=10**30))
def test_any_positive_concurrency_rotates(loop_emu: LoopEmulator, concurrency: int) -> None:
    async def rotate_all() -> list[Any]:
        psk = loop_emu.client.tunnels.ipsec.psk
        ids = loop_emu.emu.tunnel_ids
        return [o async for o in psk.rotate(loop_emu.emu.account_id, ids, concurrency=concurrency)]

    outcomes = loop_emu.call(rotate_all)
    assert len(outcomes) == len(loop_emu.emu.tunnel_ids)
    assert all(o.ok for o in outcomes)


def test_rotate_refuses_odd_tunnel_collections(loop_emu: LoopEmulator) -> None:
    psk = loop_emu.client.tunnels.ipsec.psk
    account = loop_emu.emu.account_id
    refused(loop_emu, lambda: psk.rotate(account, loop_emu.emu.tunnel_ids[0]), TypeError)
    refused(loop_emu, lambda: psk.rotate(account, 5), TypeError)  # type: ignore[call-overload]
    refused(loop_emu, lambda: psk.rotate(account, [None]))  # type: ignore[list-item]
    refused(loop_emu, lambda: psk.rotate(account, [], journal=5))  # type: ignore[call-overload]


bad_rate_limits = st.one_of(
    st.tuples(bad_counts, good_seconds),
    st.tuples(st.integers(min_value=1, max_value=10), bad_seconds),
    st.lists(st.integers(min_value=1, max_value=5), min_size=2, max_size=2),  # a list, not a tuple
    st.tuples(st.integers(min_value=1), st.integers(min_value=1), st.integers(min_value=1)),
    st.tuples(st.integers(min_value=1)),
    st.just(()),
    st.integers(),
    st.text(max_size=8),
    st.floats(),
    st.booleans(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    # so fine-grained that seconds / requests is no longer a positive float
    st.tuples(st.integers(min_value=10**309, max_value=10**320), good_seconds),
    st.tuples(st.integers(min_value=10**6, max_value=10**9), st.just(5e-324)),
)


@PROFILE
@given(value=bad_rate_limits)
def test_bad_rate_limits(loop_emu: LoopEmulator, value: Any) -> None:
    refused(loop_emu, lambda: _make(rate_limit=value))


@PROFILE
@given(
    value=st.one_of(
        st.none(),
        st.tuples(
            st.integers(min_value=1, max_value=10**12),
            st.floats(min_value=1e-3, max_value=1e9, allow_nan=False, allow_infinity=False),
        ),
    )
)
def test_good_rate_limits_work(loop_emu: LoopEmulator, value: tuple[int, float] | None) -> None:
    assume(value is None or value[0] >= value[1])  # no real waiting in this test
    client = MagicWAN(
        api_token=SECRET_TOKEN, base_url=loop_emu.emu.base_url, max_retries=0, rate_limit=value
    )

    async def attempt() -> object:
        async with client:
            return await client.tunnels.ipsec.psk.generate(
                loop_emu.emu.account_id, loop_emu.emu.tunnel_ids[2], validate_only=True
            )

    assert loop_emu.call(attempt) is not None


def test_other_bad_options(loop_emu: LoopEmulator, tmp_path: Any) -> None:
    refused(loop_emu, lambda: _make(session=object()))
    refused(loop_emu, lambda: _make(verify="/nonexistent/ca.pem"))
    refused(loop_emu, lambda: _make(verify=str(tmp_path)))  # a directory, not a bundle
    refused(loop_emu, lambda: _make(verify=1))
    refused(loop_emu, lambda: _make(verify=None))


@pytest.mark.asyncio
async def test_a_psk_given_as_a_tunnel_id_is_never_echoed() -> None:
    # rotate(method="set", psks={psk: tunnel_id}) (the mapping the wrong way round): a
    # new_psk() is 32 letters and digits, a valid id, so the check lets it through and
    # the error says "psks names tunnel <PSK>, which is not selected". A PSK with a
    # symbol is refused as an id with "may hold only ASCII letters and digits: '<PSK>'".
    async with run(tunnels=1, rate_limit=None) as emu:
        tunnel = emu.tunnel_ids[0]
        psk, symbolic = new_psk(), "Ab3$" + new_psk()[:24]
        async with MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={}) as client:
            ipsec_psk = client.tunnels.ipsec.psk
            with pytest.raises(MagicWANError) as swapped:
                ipsec_psk.rotate(
                    emu.account_id,
                    [tunnel],
                    method="set",
                    unsafe_without_journal=True,
                    psks={psk: tunnel},
                )
            with pytest.raises(MagicWANError) as refused:
                await ipsec_psk.generate(emu.account_id, symbolic)
    assert psk not in str(swapped.value)
    assert "not shown" in str(swapped.value)
    assert symbolic not in str(refused.value)


@pytest.mark.asyncio
async def test_a_psk_file_given_as_from_file_is_never_echoed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `magicwan psk generate T --show-psk > p.txt` writes one line, the PSK: 32 letters
    # and digits, a well-formed id. `magicwan psk rotate --from-file p.txt` (the wrong
    # file) is refused, rightly, before anything changes, with "not IPsec tunnels of
    # account A: <the PSK>" on stderr (and in the --json error line).
    psk_file = tmp_path / "p.txt"
    psk_file.write_text(new_psk() + "\n")
    async with cli_emulator(monkeypatch, tunnels=1):
        argv = ["psk", "rotate", "--from-file", str(psk_file), "--journal", "j", "--json"]
        out, err = io.StringIO(), io.StringIO()
        code = await cli.amain(argv, stdout=out, stderr=err)
    assert code == 2
    assert psk_file.read_text().strip() not in out.getvalue() + err.getvalue()


@pytest.mark.asyncio
async def test_a_psk_sent_as_a_tunnel_id_is_in_no_error_and_no_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # `magicwan tunnels get ACCOUNT <PSK>`: a PSK of letters and digits is a well-formed id,
    # so the request goes out, and Cloudflare's 404 quotes the path it could not route.
    # What the SDK shows of the answer, and what it logs at any level, never holds it.
    psk = new_psk()
    quoting = web.middleware(_quote_the_path)
    caplog.set_level(logging.DEBUG, logger="magicwan")
    async with (
        run(tunnels=1, rate_limit=None, middlewares=[quoting]) as emu,
        MagicWAN(api_token=emu.api_token, base_url=emu.base_url, environ={}) as client,
    ):
        with pytest.raises(NotFoundError) as refused:
            await client.tunnels.ipsec.get(emu.account_id, psk)
        with pytest.raises(MagicWANError):
            await client.tunnels.ipsec.psk.generate(emu.account_id, psk.upper())
    assert "[REDACTED]" in str(refused.value)  # the answer quoted it, and it was scrubbed
    logged = " ".join(
        f"{record.getMessage()} {sorted(vars(record).items())!r}" for record in caplog.records
    )
    shown = f"{refused.value!s} {refused.value!r} {refused.value.errors} {logged}"
    assert caplog.records  # the requests were logged, without the PSK
    assert psk.lower() not in shown.lower()


async def _quote_the_path(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    if response.status != 404:
        return response
    return web.json_response(
        {
            "success": False,
            "errors": [{"code": 7003, "message": f"Could not route to {request.path}"}],
            "messages": [],
            "result": None,
        },
        status=404,
    )
