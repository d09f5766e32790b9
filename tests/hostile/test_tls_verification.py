"""TLS: verification is on by default, a custom CA bundle or SSLContext works, a wrong CA fails."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import trustme

from magicwan import APIConnectionError, MagicWAN
from magicwan.emulator import Emulator, run
from tests.support.secrets import (
    SECRET_EMAIL,
    SECRET_KEY,
    SECRET_TOKEN,
    assert_no_secret,
    exception_texts,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_bundle(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest_asyncio.fixture
async def tls_emulator(ca: trustme.CA) -> AsyncIterator[Emulator]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    async with run(
        tunnels=2,
        rate_limit=None,
        seed=4,
        api_token=SECRET_TOKEN,
        api_email=SECRET_EMAIL,
        api_key=SECRET_KEY,
        ssl_context=server_context,
    ) as emu:
        assert emu.base_url.startswith("https://127.0.0.1:")
        yield emu


async def _generate(emu: Emulator, **options: object) -> str | None:
    async with MagicWAN(
        api_token=SECRET_TOKEN,
        base_url=emu.base_url,
        max_retries=0,
        timeout=10,
        **options,  # type: ignore[arg-type]
    ) as client:
        result = await client.tunnels.ipsec.psk.generate(emu.account_id, emu.tunnel_ids[0])
    return result.psk


async def _refused(emu: Emulator, **options: object) -> APIConnectionError:
    with pytest.raises(APIConnectionError) as info:
        await _generate(emu, **options)
    exc = info.value
    assert exc.request_sent is False
    text = str(exc).lower()
    assert "certificate" in text or "ssl" in text, str(exc)
    assert_no_secret(exception_texts(exc), [SECRET_TOKEN])
    assert emu.state.requests.total == 0, "the server saw a request over an unverified channel"
    return exc


async def test_default_verification_refuses_an_unknown_ca(tls_emulator: Emulator) -> None:
    await _refused(tls_emulator)


async def test_a_failed_verification_is_not_retried(tls_emulator: Emulator) -> None:
    # Retrying cannot make a certificate verify: one handshake, no backoff, nothing sent.
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    with pytest.raises(APIConnectionError) as info:
        async with MagicWAN(
            api_token=SECRET_TOKEN, base_url=tls_emulator.base_url, max_retries=2, sleep=sleep
        ) as client:
            await client.tunnels.ipsec.psk.generate(
                tls_emulator.account_id, tls_emulator.tunnel_ids[0]
            )
    assert info.value.retryable is False
    assert "certificate" in str(info.value).lower()
    assert sleeps == []
    assert tls_emulator.state.requests.total == 0


async def test_a_ca_bundle_path_works(tls_emulator: Emulator, ca_bundle: str) -> None:
    psk = await _generate(tls_emulator, verify=ca_bundle)
    assert psk == tls_emulator.state.current_psk(
        tls_emulator.account_id, tls_emulator.tunnel_ids[0]
    )


async def test_an_ssl_context_works(tls_emulator: Emulator, ca: trustme.CA) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    psk = await _generate(tls_emulator, verify=context)
    assert psk == tls_emulator.state.current_psk(
        tls_emulator.account_id, tls_emulator.tunnel_ids[0]
    )


async def test_a_wrong_ca_fails(tls_emulator: Emulator, tmp_path: Path) -> None:
    other = trustme.CA()
    bundle = tmp_path / "other.pem"
    other.cert_pem.write_to_path(str(bundle))
    await _refused(tls_emulator, verify=str(bundle))
    context = ssl.create_default_context()
    other.configure_trust(context)
    await _refused(tls_emulator, verify=context)


async def test_a_certificate_for_another_host_fails(ca: trustme.CA, ca_bundle: str) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("api.example.com").configure_cert(server_context)
    async with run(
        tunnels=1, rate_limit=None, api_token=SECRET_TOKEN, ssl_context=server_context
    ) as emu:
        await _refused(emu, verify=ca_bundle)


async def test_http_to_an_https_server_and_back_fail_typed(
    tls_emulator: Emulator, ca_bundle: str
) -> None:
    plain = tls_emulator.base_url.replace("https://", "http://")
    with pytest.raises(APIConnectionError):
        async with MagicWAN(api_token=SECRET_TOKEN, base_url=plain, max_retries=0, timeout=5) as c:
            await c.tunnels.ipsec.psk.generate(tls_emulator.account_id, tls_emulator.tunnel_ids[0])
