"""MagicWAN construction: credentials, base URL, limits; no secret ever shown.

Which credentials a client uses is read from what it sends: the headers of a request captured
by aioresponses (``mock_api``).
"""

from __future__ import annotations

import ast
import inspect
import math
import re
import textwrap
from collections.abc import Mapping
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

from magicwan import DEFAULT_BASE_URL, InvalidInputError, MagicWAN, MagicWANError
from magicwan.ratelimit import MAX_COOLDOWN
from tests.support.constants import ACCOUNT, BASE, EMAIL, KEY, PSK, PSK_URL, TOKEN, TUNNEL
from tests.support.samples import envelope


def _no_secret(text: str) -> None:
    assert TOKEN not in text
    assert KEY not in text


async def sent_headers(client: MagicWAN, mock_api: aioresponses) -> Mapping[str, str]:
    """The headers of the one PSK generation ``client`` sends (then closes it)."""
    mock_api.post(PSK_URL, payload=envelope({"ipsec_tunnel_id": TUNNEL, "psk": PSK}))
    async with client:
        await client.tunnels.ipsec.psk.generate(ACCOUNT, TUNNEL)
    [call] = mock_api.requests[("POST", URL(PSK_URL))]
    headers: Mapping[str, str] = call.kwargs["headers"]
    return headers


@pytest.mark.asyncio
async def test_token_argument(mock_api: aioresponses) -> None:
    client = MagicWAN(api_token=TOKEN)
    assert client.auth_scheme == "token"
    assert client.base_url == DEFAULT_BASE_URL == BASE
    headers = await sent_headers(client, mock_api)
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert "X-Auth-Key" not in headers


@pytest.mark.asyncio
async def test_email_and_key_arguments(mock_api: aioresponses) -> None:
    client = MagicWAN(api_email=EMAIL, api_key=KEY)
    assert client.auth_scheme == "key"
    headers = await sent_headers(client, mock_api)
    assert headers["X-Auth-Email"] == EMAIL
    assert headers["X-Auth-Key"] == KEY
    assert "Authorization" not in headers


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    assert MagicWAN().auth_scheme == "token"


@pytest.mark.asyncio
async def test_email_and_key_from_environment(
    monkeypatch: pytest.MonkeyPatch, mock_api: aioresponses
) -> None:
    monkeypatch.setenv("CLOUDFLARE_EMAIL", EMAIL)
    monkeypatch.setenv("CLOUDFLARE_API_KEY", KEY)
    client = MagicWAN()
    assert client.auth_scheme == "key"
    assert (await sent_headers(client, mock_api))["X-Auth-Key"] == KEY


def test_explicit_environ_mapping() -> None:
    client = MagicWAN(environ={"CLOUDFLARE_API_TOKEN": TOKEN})
    assert client.auth_scheme == "token"


@pytest.mark.asyncio
async def test_any_argument_wins_over_the_whole_environment(
    monkeypatch: pytest.MonkeyPatch, mock_api: aioresponses
) -> None:
    monkeypatch.setenv("CLOUDFLARE_EMAIL", EMAIL)
    monkeypatch.setenv("CLOUDFLARE_API_KEY", KEY)
    client = MagicWAN(api_token=TOKEN)
    assert client.auth_scheme == "token"
    assert "X-Auth-Key" not in await sent_headers(client, mock_api)


def test_argument_key_does_not_borrow_the_environments_email(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Precedence is per source, never a mix: the env e-mail is not paired with an arg key.
    monkeypatch.setenv("CLOUDFLARE_EMAIL", EMAIL)
    with pytest.raises(InvalidInputError, match="api_email is missing") as info:
        MagicWAN(api_key=KEY)
    _no_secret(str(info.value))


def test_argument_email_does_not_pair_with_env_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    with pytest.raises(InvalidInputError, match="api_key is missing"):
        MagicWAN(api_email=EMAIL)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"api_token": TOKEN, "api_key": KEY},
        {"api_token": TOKEN, "api_email": EMAIL},
        {"api_token": TOKEN, "api_email": EMAIL, "api_key": KEY},
    ],
)
def test_ambiguous_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError, match="ambiguous") as info:
        MagicWAN(**kwargs)
    assert isinstance(info.value, ValueError)
    _no_secret(str(info.value))
    _no_secret(repr(info.value))


@pytest.mark.parametrize(
    "env",
    [
        {"CLOUDFLARE_API_TOKEN": TOKEN, "CLOUDFLARE_API_KEY": KEY},
        {"CLOUDFLARE_API_TOKEN": TOKEN, "CLOUDFLARE_EMAIL": EMAIL, "CLOUDFLARE_API_KEY": KEY},
    ],
)
def test_ambiguous_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidInputError, match="ambiguous credentials in the environment") as info:
        MagicWAN()
    assert "CLOUDFLARE_API_TOKEN" in str(info.value)
    _no_secret(str(info.value))


@pytest.mark.parametrize(
    ("kwargs", "missing"),
    [({"api_email": EMAIL}, "api_key"), ({"api_key": KEY}, "api_email")],
)
def test_incomplete_arguments(kwargs: dict[str, Any], missing: str) -> None:
    with pytest.raises(InvalidInputError, match=f"{missing} is missing") as info:
        MagicWAN(**kwargs)
    _no_secret(str(info.value))


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"CLOUDFLARE_EMAIL": EMAIL}, "CLOUDFLARE_API_KEY"),
        ({"CLOUDFLARE_API_KEY": KEY}, "CLOUDFLARE_EMAIL"),
    ],
)
def test_incomplete_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], missing: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidInputError, match=f"{missing} is missing") as info:
        MagicWAN()
    _no_secret(str(info.value))


def test_no_credentials() -> None:
    with pytest.raises(InvalidInputError, match="no credentials") as info:
        MagicWAN()
    assert "CLOUDFLARE_API_TOKEN" in str(info.value)


def test_empty_environment_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "")
    monkeypatch.setenv("CLOUDFLARE_EMAIL", EMAIL)
    monkeypatch.setenv("CLOUDFLARE_API_KEY", KEY)
    assert MagicWAN().auth_scheme == "key"


@pytest.mark.parametrize(
    "bad",
    [TOKEN + "\n", TOKEN + "\r\nX-Evil: 1", f"{TOKEN}\x00", f"t\u00f6{TOKEN}", f"{TOKEN} x", ""],
    ids=repr,
)
@pytest.mark.parametrize("where", ["api_token", "api_key", "env_token"])
def test_unsafe_credentials_are_refused_without_echo(bad: str, where: str) -> None:
    cases: dict[str, dict[str, Any]] = {
        "api_token": {"api_token": bad},
        "api_key": {"api_email": EMAIL, "api_key": bad},
        "env_token": {"environ": {"CLOUDFLARE_API_TOKEN": bad}},
    }
    kwargs = cases[where]
    with pytest.raises(InvalidInputError) as info:
        MagicWAN(**kwargs)
    text = str(info.value) + repr(info.value)
    _no_secret(text)
    assert info.value.__cause__ is None


def test_non_string_credentials_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="api_token must be a string"):
        MagicWAN(api_token=12345)  # type: ignore[arg-type]


@pytest.mark.asyncio
@pytest.mark.parametrize("kwargs", [{"api_token": TOKEN}, {"api_email": EMAIL, "api_key": KEY}])
async def test_repr_and_vars_show_no_secret(kwargs: dict[str, Any]) -> None:
    async with MagicWAN(**kwargs) as client:
        _no_secret(repr(client))
        _no_secret(str(client))
        _no_secret(repr(client.tunnels))
        _no_secret(repr(client.policy))
        _no_secret(repr(client.rate_limiter))
        assert BASE in repr(client)


def test_base_url_argument_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", "http://127.0.0.1:8787/client/v4/")
    assert MagicWAN(api_token=TOKEN).base_url == "http://127.0.0.1:8787/client/v4"
    assert MagicWAN(api_token=TOKEN, base_url=BASE).base_url == BASE  # argument wins


def test_base_url_from_environment_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", "http://api.cloudflare.com/client/v4")
    with pytest.raises(InvalidInputError, match="https"):
        MagicWAN(api_token=TOKEN)


def test_base_url_with_credentials_is_refused_without_echo() -> None:
    with pytest.raises(InvalidInputError, match="credentials") as info:
        MagicWAN(api_token=TOKEN, base_url=f"https://u:{KEY}@api.cloudflare.com")
    _no_secret(str(info.value))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.0}, "timeout"),
        ({"timeout": math.inf}, "timeout"),
        ({"timeout": "30"}, "timeout"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"connect_timeout": math.nan}, "connect_timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"max_retry_after": 0}, "max_retry_after"),
        ({"max_retry_after": math.inf}, "max_retry_after"),
        ({"rate_limit": (0, 300.0)}, "rate_limit"),
        ({"rate_limit": (1200, 0)}, "rate_limit"),
        ({"rate_limit": (1200,)}, "rate_limit"),
        ({"rate_limit": [1200, 300.0]}, "rate_limit"),
        ({"rate_limit": 1200}, "rate_limit"),
        ({"connection_limit": 0}, "connection_limit"),
        ({"connection_limit": 10.0}, "connection_limit"),
        ({"session": object()}, "session"),
        ({"verify": 1}, "verify"),
        ({"verify": "/nonexistent/ca.pem"}, "CA bundle"),
    ],
)
def test_invalid_settings(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment) as info:
        MagicWAN(api_token=TOKEN, **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    _no_secret(str(info.value))


def test_retry_unknown_outcome_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="retry_unknown_outcome"):
        MagicWAN(api_token=TOKEN, retry_unknown_outcome=1)  # type: ignore[arg-type]


def test_valid_settings_are_applied() -> None:
    client = MagicWAN(
        api_token=TOKEN,
        timeout=5,
        connect_timeout=1.5,
        max_retries=0,
        retry_unknown_outcome=False,
        max_retry_after=10,
        rate_limit=(10, 1.0),
        connection_limit=7,
    )
    assert client.policy.max_retries == 0
    assert client.policy.retry_unknown_outcome is False
    assert client.policy.max_retry_after == 10.0
    assert client.rate_limiter.limit == 10
    assert client.rate_limiter.period == 1.0
    assert client.timeout == 5.0
    assert client.connect_timeout == 1.5
    assert client.connection_limit == 7


def test_rate_limit_none_disables_pacing() -> None:
    client = MagicWAN(api_token=TOKEN, rate_limit=None)
    assert client.rate_limiter.limit is None


def test_defaults() -> None:
    client = MagicWAN(api_token=TOKEN)
    assert client.policy.max_retries == 2
    assert client.policy.retry_unknown_outcome is True
    assert client.rate_limiter.limit == 1200
    assert client.rate_limiter.period == 300.0
    assert not client.closed


def test_errors_are_magicwan_errors() -> None:
    with pytest.raises(MagicWANError):
        MagicWAN()


def test_a_retry_after_the_client_agrees_to_wait_is_never_cut_short() -> None:
    # The client-side cooldown is capped at MAX_COOLDOWN, but never below max_retry_after:
    # a 429 the client waits out is waited out in full.
    assert MagicWAN(api_token=TOKEN).rate_limiter.max_cooldown == MAX_COOLDOWN
    client = MagicWAN(api_token=TOKEN, max_retry_after=900)
    assert client.rate_limiter.max_cooldown == 900
    assert client.rate_limiter.pause(600) == 600


def test_the_docstring_documents_every_argument_and_public_attribute() -> None:
    """The API reference is built from docstrings: every constructor argument has its line
    under ``Args:``, and every public attribute ``__init__`` sets has a docstring (so the
    page shows what it is, not the code that made it)."""
    doc = inspect.getdoc(MagicWAN)
    assert doc is not None
    args = doc.split("\nArgs:\n", 1)[1].split("\n\n", 1)[0]
    documented = re.findall(r"^    (\w+): ", args, flags=re.MULTILINE)
    assert documented == list(inspect.signature(MagicWAN).parameters)

    init = ast.parse(textwrap.dedent(inspect.getsource(MagicWAN.__init__))).body[0]
    assert isinstance(init, ast.FunctionDef)
    body = init.body
    undocumented = []
    for statement, following in zip(body, [*body[1:], None], strict=True):
        if isinstance(statement, ast.Assign | ast.AnnAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                public = (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                    and not target.attr.startswith("_")
                )
                documented_here = (
                    isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)
                )
                if public and not documented_here:
                    assert isinstance(target, ast.Attribute)
                    undocumented.append(target.attr)
    assert undocumented == []
