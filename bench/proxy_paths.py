"""The proxy's data path alone, on aiohttp's internals or on its public client.

broker/proxy/aiohttp_internals.py exists for speed: PodPool writes a request
head in one send and parses the answer with aiohttp's protocol, skipping the
request, response, timers and connection key a ClientSession builds per call.
This process proxies every request to one upstream either way, with the
broker's own header filtering (upstream_headers) and relay (relay_answer),
so the two differ only in the client: bench/proxy.py runs one of each beside
the broker and prints the ratio that keeps the internals justified.

    python bench/proxy_paths.py --port 8001 --upstream http://127.0.0.1:7860 --client pool|session
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

if __package__ in (None, ""):  # run as `python bench/proxy_paths.py`
    sys.path[0] = str(Path(__file__).resolve().parents[1])
from broker.identity import Identity
from broker.proxy import PodPool, proxy_http, upstream_headers
from broker.proxy.forward import connecting, relay_answer, target_url

CLIENTS = ("pool", "session")
IDENTITY = Identity(user="bench")
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)


def build(upstream: str, client: str) -> web.Application:
    """One catch-all route to UPSTREAM through the chosen client."""
    app = web.Application()
    pods = PodPool()
    http: list[aiohttp.ClientSession] = []

    async def session_ctx(_app: web.Application):
        # Made as the broker makes its own (broker/runtime.py): keep-alive, no cookies.
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        http.append(session)
        yield
        await session.close()
        pods.close()

    async def via_pool(request: web.Request) -> web.StreamResponse:
        headers = upstream_headers(request, IDENTITY, trusted_peer=False)
        return await proxy_http(
            request, pods, upstream, headers, connect_timeout=10, read_timeout=60, body_timeout=60
        )

    async def via_session(request: web.Request) -> web.StreamResponse:
        headers = upstream_headers(request, IDENTITY, trusted_peer=False)
        with connecting():
            answer = await http[0].request(
                request.method,
                target_url(upstream, request),
                headers=headers,
                data=request.content if request.body_exists else None,
                allow_redirects=False,
                timeout=TIMEOUT,
            )
        return await relay_answer(request, answer)

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", via_pool if client == "pool" else via_session)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://host:port")
    parser.add_argument("--client", choices=CLIENTS, required=True)
    args = parser.parse_args(argv)
    try:  # as `sdbroker serve` runs (broker/cli.py)
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    web.run_app(
        build(args.upstream, args.client),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=lambda _: print(f"serving on {args.port}", flush=True),
    )


if __name__ == "__main__":
    main()
