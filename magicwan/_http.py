"""The only module that uses aiohttp's client: it sends one request and returns
``(status, headers, body)``, or raises a typed connection error.

Everything else (retries, the limiter, envelopes, rate-limit headers) lives in pure code
that never sees aiohttp (the gidgethub shape: a thin adapter beside a sans-I/O core).
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import zlib
from collections.abc import Mapping, Sequence

import aiohttp
import attrs
from yarl import URL

from magicwan._envelope import ray_id as ray_id_of
from magicwan._version import __version__
from magicwan.errors import APIConnectionError, APITimeoutError, UnexpectedResponseError

__all__ = ["MAX_RESPONSE_BYTES", "HTTPAdapter", "RawResponse", "user_agent"]

#: Largest response body read before giving up (a hostile or broken server), decompressed:
#: the default of every route that answers about one tunnel or one batch. A route may
#: declare its own (the tunnel lists: :data:`magicwan._routes.MAX_LIST_RESPONSE_BYTES`).
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
#: The encodings we accept, with zlib's window bits for each (gzip header, zlib header).
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _wbits(encoding: str, raw: bytes) -> int:
    """zlib's window bits for a body in ``encoding`` (one of :data:`_DECODERS`).

    ``deflate`` should carry a zlib header (RFC 1950), but many servers send a raw deflate
    stream. As aiohttp does (``http_parser.DeflateBuffer``), a first byte whose low four
    bits are not 8 (the "deflate" compression method) means raw deflate.
    """
    if encoding == "deflate" and raw and raw[0] & 0x0F != 8:
        return -zlib.MAX_WBITS
    return _DECODERS[encoding]


def user_agent() -> str:
    """``magicwan/<version> Python/<x.y.z> aiohttp/<version>``."""
    py = ".".join(str(part) for part in sys.version_info[:3])
    return f"magicwan/{__version__} Python/{py} aiohttp/{aiohttp.__version__}"


@attrs.frozen
class RawResponse:
    """An HTTP answer as it came: nothing decoded yet."""

    status: int
    headers: Mapping[str, str]
    body: bytes = attrs.field(repr=False)  # may hold a PSK: never in a traceback's locals


def _ssl_setting(verify: bool | str | ssl.SSLContext) -> bool | ssl.SSLContext:
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify


class HTTPAdapter:
    """One client's HTTP: its session (ours or the caller's) and :meth:`send`.

    A session passed in is used as is and never closed here; our own is created inside
    the running loop on first use and closed by :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        host: str,
        timeout: float,
        connect_timeout: float,
        connection_limit: int,
        session: aiohttp.ClientSession | None = None,
        verify: bool | str | ssl.SSLContext = True,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._host = host
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._timeout_s = timeout
        self._connection_limit = connection_limit
        # Requests in flight, also on a session the caller passed (whose pool is theirs).
        self._slots = asyncio.Semaphore(connection_limit)
        self._ssl = _ssl_setting(verify)
        self._trace_configs = list(trace_configs)
        self._max_response_bytes = max_response_bytes
        self._session = session
        self._owns_session = session is None
        self._closed = False
        # The loop our session (and its sockets) belong to: aiohttp cannot cross loops.
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            # aiohttp would raise a bare RuntimeError here, or hang on a socket of a dead loop.
            raise APIConnectionError(
                "the client was opened in another event loop (one asyncio.run() per call?): "
                "create and close one client per event loop, e.g. `async with MagicWAN(...)` "
                "inside the coroutine given to asyncio.run()",
                request_sent=False,
                retryable=False,
            )
        if not self._owns_session and self._session is not None:
            # A session the caller made in another loop: aiohttp would raise a bare
            # RuntimeError ("Timeout context manager should be used inside a task"). It has
            # no public accessor for a session's loop (ClientSession.loop is deprecated).
            theirs = getattr(self._session, "_loop", None)
            if isinstance(theirs, asyncio.AbstractEventLoop) and theirs is not loop:
                raise APIConnectionError(
                    "the aiohttp session given to the client belongs to another event loop: "
                    "create it inside the loop that uses the client",
                    request_sent=False,
                    retryable=False,
                )

    def _check_open(self) -> None:
        if self._closed:
            raise APIConnectionError("the client is closed", request_sent=False, retryable=False)

    def _usable(self) -> None:
        self._check_open()
        self._check_loop()

    def _open(self) -> aiohttp.ClientSession:
        """The session, made on first use; callers have checked the loop (``_usable``)."""
        self._check_open()
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._connection_limit, limit_per_host=0, ttl_dns_cache=300, ssl=self._ssl
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
                trace_configs=self._trace_configs or None,
            )
        elif self._session.closed:
            raise APIConnectionError(
                "the aiohttp session given to the client is closed",
                request_sent=False,
                retryable=False,
            )
        return self._session

    def open(self) -> None:
        """Create our own session now (inside the running loop), if we own one."""
        self._usable()
        self._open()

    async def aclose(self) -> None:
        """Close our own session (never one we were given). Safe to call twice."""
        self._closed = True
        session, self._session = self._session, None
        if session is None or not self._owns_session or session.closed:
            return
        if self._loop is None or self._loop is asyncio.get_running_loop():
            await session.close()
        elif not self._loop.is_closed() and self._loop.is_running():
            # Opened in a loop that still runs (another thread): close it there.
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(session.close(), self._loop))
        # else: the session's loop is gone with its sockets; nothing here can close them.

    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        max_response_bytes: int | None = None,
    ) -> RawResponse:
        """Send one request; never follows a redirect. ``max_response_bytes`` caps this
        answer's body (default: the adapter's cap).

        Raises :class:`APIConnectionError` (``request_sent`` says whether the server may
        have seen the request), :class:`APITimeoutError`, or
        :class:`UnexpectedResponseError` for a body over the size limit.
        """
        host = self._host
        self._usable()  # before the slots: a semaphore of another loop raises RuntimeError
        try:
            async with (
                self._slots,
                # Opened once a slot is free: a call queued for one when the client closes
                # raises "the client is closed" (nothing sent), not aiohttp's RuntimeError.
                self._open().request(
                    method,
                    # Built from validated, quoted parts: no need for yarl to parse and
                    # requote it on every call.
                    URL(url, encoded=True),
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    raise_for_status=False,
                    timeout=self._timeout,
                    ssl=self._ssl,
                    # Bodies are decompressed here, within the size limit: a 40 KiB gzip
                    # body must not inflate to gigabytes before anyone counts.
                    auto_decompress=False,
                ) as resp,
            ):
                limit = (
                    self._max_response_bytes if max_response_bytes is None else max_response_bytes
                )
                return RawResponse(resp.status, resp.headers, await self._read(resp, limit))
        except aiohttp.ConnectionTimeoutError as exc:
            error: APIConnectionError = APITimeoutError(
                f"timed out connecting to {host}", request_sent=False
            )
            cause: BaseException | None = exc
        except aiohttp.ClientConnectorCertificateError as exc:
            # Retrying cannot make a certificate verify.
            error = APIConnectionError(
                f"TLS certificate of {host} failed verification: {exc.certificate_error}",
                request_sent=False,
                retryable=False,
            )
            cause = exc
        except aiohttp.ClientConnectorError as exc:
            error = APIConnectionError(
                f"cannot connect to {host}: {exc.os_error or type(exc).__name__}",
                request_sent=False,
            )
            cause = exc
        except TimeoutError as exc:
            error = APITimeoutError(
                f"no complete answer from {host} within {self._timeout_s:g}s", request_sent=True
            )
            cause = exc
        except aiohttp.ClientResponseError as exc:
            error = APIConnectionError(
                f"invalid HTTP answer from {host}: {type(exc).__name__}", request_sent=True
            )
            cause = None  # not chained: aiohttp keeps the request's headers (credentials) on it
        except RuntimeError as exc:
            # aiohttp's own misuse errors (a session of another loop, should the check in
            # _check_loop miss one) and a connection closed mid-read ("Connection closed.").
            # Where it happened is unknown, so the request may have been sent.
            error = APIConnectionError(
                f"aiohttp failed on a request to {host}: RuntimeError "
                "(an aiohttp session of another event loop?)",
                request_sent=True,
                retryable=False,
            )
            cause = exc
        except (aiohttp.ClientError, OSError) as exc:
            what = "the client was closed" if self._closed else type(exc).__name__
            error = APIConnectionError(
                f"connection to {host} failed after sending: {what}",
                request_sent=True,
                retryable=not self._closed,
            )
            cause = exc
        error.__cause__ = cause
        raise error

    async def _read(self, resp: aiohttp.ClientResponse, limit: int) -> bytes:
        encoding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
        length = resp.content_length
        if length is not None and length > limit:
            raise self._too_large(resp, limit)
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise self._too_large(resp, limit)
            chunks.append(chunk)
        raw = b"".join(chunks)
        if encoding in ("identity", ""):
            return raw
        if encoding not in _DECODERS:
            return raw  # not ours to decode: the decoder will say the body is not JSON
        inflater = zlib.decompressobj(_wbits(encoding, raw))
        try:
            body = inflater.decompress(raw, limit + 1)
        except zlib.error:
            raise UnexpectedResponseError(
                f"a {encoding} body that does not decompress",
                status=resp.status,
                ray_id=ray_id_of(resp.headers),
            ) from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise self._too_large(resp, limit)
        return body

    def _too_large(self, resp: aiohttp.ClientResponse, limit: int) -> UnexpectedResponseError:
        return UnexpectedResponseError(
            f"response body larger than {limit} bytes",
            status=resp.status,
            ray_id=ray_id_of(resp.headers),
        )
