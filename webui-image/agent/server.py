"""The agent's own HTTP port (default 7861): what the kubelet and Docker probe.

``/ready`` is the readiness probe of the kubernetes backend: 200 only once the
WebUI answers and its checkpoint is loaded, so the pod's Ready condition (the
broker's "ready" state) means "a user can generate now". ``/healthz`` is for a
liveness probe: it stays 200 while the model loads, and turns 503 only when the
WebUI has not answered at all for ``SDB_AGENT_HEALTH_GRACE``. ``/status`` is
the same facts in full, for people.
"""

from __future__ import annotations

from aiohttp import web

from .runner import Agent


def build_app(agent: Agent) -> web.Application:
    async def ready(request: web.Request) -> web.Response:
        body = {"ready": agent.ready, "reason": agent.reason}
        return web.json_response(body, status=200 if agent.ready else 503)

    async def healthz(request: web.Request) -> web.Response:
        healthy = agent.healthy()
        return web.json_response({"healthy": healthy}, status=200 if healthy else 503)

    async def status(request: web.Request) -> web.Response:
        return web.json_response(agent.status())

    app = web.Application()
    app.router.add_get("/ready", ready)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", status)
    return app


async def start(agent: Agent, host: str, port: int) -> web.AppRunner:
    """Bind the port; raises OSError when it is taken (the caller makes that fatal)."""
    runner = web.AppRunner(build_app(agent), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
