"""The reverse proxy to the user's pod: HTTP streamed both ways, WebSockets spliced.

The gateway (broker/gateway.py) decides whose pod and whether; this package
only carries the bytes. Its public face is below; inside:

- headers.py: which headers cross, each way (what the pod is told: X-Forwarded-*).
- forward.py: a request to the pod and its answer back; a WebSocket's handshake.
- upstream.py: the pods' HTTP/1.1 client, one keep-alive pool per pod address.
- splice.py: a WebSocket's bytes after the handshake, both ways, untouched.
- aiohttp_internals.py: the one module on aiohttp's private internals.
"""

from .forward import (
    BrokerBusy,
    PodBadAnswer,
    PodTimeout,
    PodUnreachable,
    proxy_http,
    proxy_websocket,
)
from .headers import upstream_headers
from .upstream import BodyStalled, PodPool

__all__ = [
    "BodyStalled",
    "BrokerBusy",
    "PodBadAnswer",
    "PodPool",
    "PodTimeout",
    "PodUnreachable",
    "proxy_http",
    "proxy_websocket",
    "upstream_headers",
]
