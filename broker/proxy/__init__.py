"""The reverse proxy to the user's pod: HTTP streamed both ways, WebSockets spliced.

The gateway (broker/gateway.py) decides whose pod and whether; this package
only carries the bytes. Its public face is below; inside:

- headers.py: which headers cross, each way (what the pod is told: X-Forwarded-*).
- forward.py: a request to the pod and its answer back; a WebSocket's handshake.
- overlay.py: the broker's bar added to a page navigation's HTML (profile `overlay`).
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
from .overlay import SCRIPT as OVERLAY_SCRIPT
from .overlay import SCRIPT_PATH as OVERLAY_SCRIPT_PATH
from .overlay import VERSION as OVERLAY_VERSION
from .overlay import ask_for_page, is_page_navigation, relay_page
from .upstream import BodyStalled, PodPool

__all__ = [
    "OVERLAY_SCRIPT",
    "OVERLAY_SCRIPT_PATH",
    "OVERLAY_VERSION",
    "BodyStalled",
    "BrokerBusy",
    "PodBadAnswer",
    "PodPool",
    "PodTimeout",
    "PodUnreachable",
    "ask_for_page",
    "is_page_navigation",
    "proxy_http",
    "proxy_websocket",
    "relay_page",
    "upstream_headers",
]
