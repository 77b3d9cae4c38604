"""kubernetes_asyncio's REST client with what a long-running controller needs: deadlines, keepalive.

kubernetes_asyncio gives every request `aiohttp.ClientTimeout()`, which is no
limit at all, unless the call names `_request_timeout` (client/rest.py,
`RESTClientObject.request`), and its connector turns no TCP keepalive on
(`RESTClientObject.__init__`). A TCP path that dies without a FIN or RST (a
NAT or load balancer that forgets the flow, a control-plane node gone) then
hangs a call, or a watch, for ever. client-go has both: every connection is
dialled with a 30 s keepalive (client-go transport/cache.go, `tlsTransportCache.get`:
`net.Dialer{Timeout: 30s, KeepAlive: 30s}`) and HTTP/2 connections are pinged
after 30 s of silence (apimachinery util/net/http.go, `readIdleTimeoutSeconds`).
aiohttp speaks HTTP/1.1, so a read deadline stands in for the ping.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
from kubernetes_asyncio.client import Configuration, rest
from kubernetes_asyncio.client.exceptions import ApiException

CONNECT_TIMEOUT = 10.0  # seconds to get a connection (pool wait, TCP, TLS)
READ_TIMEOUT = 30.0  # seconds without a byte of an answer: the path or the server is gone
KEEPALIVE_IDLE = 30  # seconds of silence before the kernel probes an idle connection
KEEPALIVE_INTERVAL = 10  # seconds between probes
KEEPALIVE_COUNT = 3  # unanswered probes before the kernel drops the connection
READ_BUFSIZE = 2**21  # as kubernetes_asyncio: a watch event can hold a large object


def request_timeout() -> aiohttp.ClientTimeout:
    """The deadline of a call that names none (read at call time, so tests can shorten it)."""
    return aiohttp.ClientTimeout(
        total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT
    )


def keepalive_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """A socket as aiohappyeyeballs makes one (impl.py, `_connect_sock`), with TCP keepalive on.

    Keepalive finds a dead path under a connection that sits idle in the pool
    (its next request would otherwise be written into the void) and under a
    watch waiting for events.
    """
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        if hasattr(socket, option):  # Linux names; elsewhere the system's defaults apply
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    return sock


class KubeRest(rest.RESTClientObject):
    """The REST client every generated API call goes through, with a default deadline.

    `on_unauthorized` is told of every 401, so that exec-plugin credentials are
    run again before the next request (client-go's exec roundTripper does so).
    """

    def __init__(
        self, configuration: Configuration, on_unauthorized: Callable[[], None] | None = None
    ) -> None:
        # As RESTClientObject.__init__ (kubernetes_asyncio client/rest.py), whose
        # connector cannot be given a socket factory; not calling it leaves no
        # session of its own behind to close.
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
        if not configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if configuration.disable_strict_ssl_verification:
            context.verify_flags &= ~ssl.VERIFY_X509_STRICT
        # kubernetes_asyncio 36.1.0's stubs disagree with themselves: client/rest.pyi types
        # these `str` / `dict`, client/configuration.pyi (whence rest.py copies them) optional.
        self.server_hostname = configuration.tls_server_name  # type: ignore[assignment]
        self.proxy = configuration.proxy  # type: ignore[assignment]
        self.proxy_headers = configuration.proxy_headers  # type: ignore[assignment]
        self._ssl = context
        self._limit = configuration.connection_pool_maxsize
        self.pool_manager = self._session()
        self.on_unauthorized = on_unauthorized
        self._closing: set[asyncio.Task[None]] = set()

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limit, ssl=self._ssl, socket_factory=keepalive_socket
        )
        return aiohttp.ClientSession(connector=connector, trust_env=True, read_bufsize=READ_BUFSIZE)

    async def close(self) -> None:
        await self.pool_manager.close()
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def request(
        self,
        method: str,
        url: str,
        query_params: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        body: Any | None = None,
        post_params: dict[str, Any] | None = None,
        _preload_content: bool = True,
        _request_timeout: float | tuple[float] | aiohttp.ClientTimeout | None = None,
    ) -> Any:
        """RESTClientObject.request's own parameters (kubernetes_asyncio 36.1.0
        client/rest.py), with our deadline when the call sets none."""
        session = self.pool_manager
        try:
            response = await super().request(
                method,
                url,
                query_params,
                headers,
                body,
                post_params,
                _preload_content,
                _request_timeout or request_timeout(),
            )
        except ApiException as exc:
            if exc.status == 401:
                self._unauthorized()
            raise
        except TimeoutError:
            self._renew(session)
            raise
        if response.status == 401:  # _preload_content=False: the caller reads the status
            self._unauthorized()
        return response

    def _renew(self, session: aiohttp.ClientSession) -> None:
        """A connection went silent: its path is likely dead for every pooled connection
        alike, each of which would cost a READ_TIMEOUT to find out. The next requests
        dial afresh; the old pool closes, ending any request still waiting on it."""
        if self.pool_manager is not session:
            return  # another request renewed it already
        self.pool_manager = self._session()
        task = asyncio.ensure_future(session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _unauthorized(self) -> None:
        if self.on_unauthorized is not None:
            self.on_unauthorized()
