"""A CPU stand-in for an AUTOMATIC1111 WebUI pod, for demos and tests.

Speaks the parts of A1111's HTTP API, Gradio queue protocols and page that the
broker, its probes and its proxy touch, with real behaviour behind them: a
serialised generation queue whose progress advances over ``--delay`` seconds
per image, PNGs drawn with Pillow and saved into the configured outdir.

Depends on aiohttp and Pillow only, never on sdbroker, because it also runs
inside the WebUI container image. The sibling ``stub_*.py`` modules and
``stub_page.html`` must sit next to this file.

    python webui-image/stub/webui_stub.py --port 7860 --pod-id pod-a
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import WSCloseCode, web
from stub_api import WebUIApi
from stub_engine import Engine
from stub_gradio import GradioQueue
from stub_styles import Styles
from stub_testkit import TestKit

SOCKETS = web.AppKey("sockets", weakref.WeakSet)
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs "%{X-Forwarded-User}i"'
SHUTDOWN_TIMEOUT = 0.2  # aiohttp waits this twice (finish, then cancel): SIGTERM exit < 1 s

log = logging.getLogger("webui_stub")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pod-id", required=True, help="shown on the page and in /stub/whoami")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--delay",
        type=float,
        default=float(os.environ.get("STUB_DELAY", "2.0")),
        help="seconds of 'GPU time' per image (default: $STUB_DELAY or 2.0)",
    )
    parser.add_argument(
        "--startup-delay",
        type=float,
        default=0.0,
        help="seconds during which /internal/ping answers 503, standing for model loading",
    )
    parser.add_argument("--outdir", type=Path, default=Path("outputs"))
    parser.add_argument("--styles-file", type=Path, default=None, help="A1111's styles.csv")
    parser.add_argument("--ui-config-file", type=Path, default=None, help="A1111's ui-config")
    return parser.parse_args(argv)


def build_app(args: argparse.Namespace) -> web.Application:
    """Wire the engine to the three route families; the worker lives in cleanup_ctx."""
    app = web.Application()
    sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
    app[SOCKETS] = sockets
    engine = Engine(args.pod_id, max(0.0, args.delay), args.outdir)
    gradio = GradioQueue(engine, sockets)
    WebUIApi(engine, args.startup_delay).add_routes(app)
    gradio.add_routes(app)
    Styles(args.styles_file, args.ui_config_file).add_routes(app)
    TestKit(args.pod_id, sockets).add_routes(app)

    async def worker(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(engine.run(), name="stub-engine")
        yield
        gradio.cancel_all()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(worker)
    app.on_shutdown.append(_close_sockets)
    return app


async def _close_sockets(app: web.Application) -> None:
    """Tell WebSocket clients we are going away; bounded, as a silent client never replies."""

    async def close(ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    closes = [asyncio.ensure_future(close(ws)) for ws in list(app[SOCKETS])]
    if closes:
        _, late = await asyncio.wait(closes, timeout=SHUTDOWN_TIMEOUT)
        for task in late:
            task.cancel()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(line_buffering=True)  # one line per request even when stdout is a pipe
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format=f"%(asctime)s stub[{args.pod_id}] %(message)s",
    )
    log.info(
        "listening on http://%s:%d delay=%.2fs startup_delay=%.2fs outdir=%s",
        args.host,
        args.port,
        args.delay,
        args.startup_delay,
        args.outdir.resolve(),
    )
    web.run_app(
        build_app(args),
        host=args.host,
        port=args.port,
        print=None,
        access_log_format=ACCESS_LOG_FORMAT,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        handle_signals=True,
    )


if __name__ == "__main__":
    main()
