"""``python -m agent``: load the settings, serve the probes, run the loops.

Exit status: 0 after SIGTERM/SIGINT, 2 on a wrong setting or volume (one
``fatal:`` log line says which), 3 when the pod's record breaks the
single-use rule, 1 on a bug. The entrypoint ends the container on any exit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import aiohttp

from . import config as settings
from . import server
from .agones import AgonesSDK
from .keeping import KeptSettings
from .runner import EXIT_FATAL_CONFIG, Agent
from .webui import A1111, ComfyUI, WebUI

log = logging.getLogger("sdb-agent")


async def amain(config: settings.Config) -> int:
    # trust_env=False: the WebUI and the sidecar are on loopback; an HTTP(S)_PROXY
    # set for the WebUI's own downloads must never capture these calls.
    async with aiohttp.ClientSession(trust_env=False) as session:
        timeout = config.request_timeout
        webui: WebUI
        if config.webui == "comfyui":
            link = None if config.split else config.outputs_link
            webui = ComfyUI(session, config.webui_url, timeout, link, config.holding_dir)
        else:
            webui = A1111(session, config.webui_url, timeout)
        sdk = AgonesSDK(session, config.agones_url, timeout) if config.mode == "agones" else None
        kept = KeptSettings(config, session) if config.keep_settings else None
        agent = Agent(config, webui, sdk, kept)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stopping.set)
        try:
            runner = await server.start(agent, config.host, config.port)
        except OSError as exc:
            log.critical("fatal: cannot listen on %s:%d: %s", config.host, config.port, exc)
            return EXIT_FATAL_CONFIG
        try:
            code = await agent.run()
        finally:
            await runner.cleanup()
        log.info("stopped (exit status %d)", code)
        return code


def main() -> int:
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(line_buffering=True)  # log lines reach `kubectl logs` at once
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="%(asctime)s sdb-agent %(levelname)s %(message)s",
    )
    try:
        config = settings.load()
        settings.check_filesystem(config)
    except settings.ConfigError as exc:
        log.critical("fatal: %s", exc)
        return EXIT_FATAL_CONFIG
    logging.getLogger().setLevel(config.log_level)
    log.info(
        "starting: mode=%s webui=%s at %s, probes on %s:%d, outputs under %s%s",
        config.mode,
        config.webui,
        config.webui_url,
        config.host,
        config.port,
        config.outputs_root,
        f" (split: the WebUI saves into {config.holding_dir})" if config.split else "",
    )
    return asyncio.run(amain(config))


if __name__ == "__main__":
    sys.exit(main())
