"""The agent's side of people's WebUI settings: the same code as the broker's local
backend (``webui_settings.py`` is fleet/webui_settings.py, byte for byte).

The agent is the only container with the outputs volume, so it is the trusted side
here: once the claim is seen and the WebUI is ready, it restores the user's kept
settings, then saves them every ``settings_interval`` when they changed, and once more
at SIGTERM (a reclaim stops the pod while still claimed). Kubernetes learns the claim
from the Downward API file, which the kubelet refreshes on its own schedule (seconds,
up to about a minute), so there the restore can come after the user's first page.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from .claims import Claim
from .config import Config
from .webui_settings import Keeper, SettingsError, Store, WebUISettings

log = logging.getLogger("sdb-agent")
_ERRORS = (OSError, SettingsError, aiohttp.ClientError, asyncio.TimeoutError)


class KeptSettings:
    def __init__(self, config: Config, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.session = session
        self.keeper: Keeper | None = None
        self.failures = 0

    async def run(self, claimed: Callable[[], Claim | None], ready: Callable[[], bool]) -> None:
        """Restore once the claim is known and the WebUI ready; then save on change."""
        config = self.config
        while self.keeper is None:
            claim = claimed()
            if claim is not None and ready():
                webui = WebUISettings(
                    self.session, config.webui_url, config.webui,
                    str(config.webui_settings) if config.webui_settings else None,
                    config.request_timeout,
                )  # fmt: skip
                keeper = Keeper(webui, Store(str(config.outputs_root), claim.slug, config.webui))
                try:
                    restored = await keeper.restore()
                    log.info("restored %d settings file(s) of %s", restored, claim.slug)
                except _ERRORS as exc:
                    self.failures += 1
                    log.warning("could not restore the settings of %s: %s", claim.slug, exc)
                self.keeper = keeper
            else:
                await asyncio.sleep(config.poll_interval)
        while True:
            await asyncio.sleep(config.settings_interval)
            await self.save()

    async def save(self) -> None:
        if self.keeper is None:
            return
        try:
            changed = await self.keeper.save()
        except _ERRORS as exc:
            self.failures += 1
            log.warning("could not save the settings of %s: %s", self.keeper.store.slug, exc)
            return
        if changed:
            log.info("kept %d settings file(s) of %s", changed, self.keeper.store.slug)
