"""The local backend's keeper of people's WebUI settings (fleet/webui_settings.py).

On one machine the broker is the trusted side: it restores the user's kept settings
into the pod it binds (before the claim is marked bound, so before their first
request), saves them every SAVE_EVERY while the pod is claimed when they changed,
and once more when the pod is stopped while still claimed (a reclaim), so the last
change is kept. A failure is logged and counted and never fails a claim or a stop.
On Kubernetes and Agones the pod's agent does the same with the same module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp

from ..webui_settings import Keeper, SettingsError, Store, WebUISettings

log = logging.getLogger(__name__)
#: Seconds between two looks at a claimed pod's settings (a GET or two, a digest).
SAVE_EVERY = 30.0
_ERRORS = (OSError, SettingsError, aiohttp.ClientError, TimeoutError)


class LocalSettings:
    """One Keeper per claimed pod this broker bound, and its save loop."""

    def __init__(self) -> None:
        self._keepers: dict[str, Keeper] = {}
        self._loops: dict[str, asyncio.Task[None]] = {}
        #: Restores and saves that failed, since start (for logs and tests).
        self.failures = 0

    @staticmethod
    def keeper(
        http: aiohttp.ClientSession, addr: str, kind: str, home: str, outputs_root: str, slug: str
    ) -> Keeper:
        return Keeper(WebUISettings(http, addr, kind, home), Store(outputs_root, slug, kind))

    def watching(self, pod_id: str) -> bool:
        return pod_id in self._keepers

    async def claimed(self, pod_id: str, keeper: Keeper) -> None:
        """Restore into the pod just claimed, then keep saving; never raises."""
        if pod_id in self._keepers:
            return  # bound twice (idempotent binding): one keeper
        self._keepers[pod_id] = keeper
        try:
            restored = await keeper.restore()
            if restored:
                log.info("restored %d settings file(s) of %s into pod %s",
                         restored, keeper.store.slug, pod_id)  # fmt: skip
        except _ERRORS as exc:
            self.failures += 1
            log.warning("could not restore the settings of %s into pod %s: %s",
                        keeper.store.slug, pod_id, exc,
                        extra={"event": "settings_restore_failed"})  # fmt: skip
        except Exception:  # a bug here must not cost the person their session
            self.failures += 1
            log.exception("could not restore the settings of %s into pod %s",
                          keeper.store.slug, pod_id)  # fmt: skip
        self._loops[pod_id] = asyncio.create_task(
            self._save_loop(pod_id, keeper), name=f"settings-{pod_id}"
        )

    async def _save_loop(self, pod_id: str, keeper: Keeper) -> None:
        """Until the pod is stopped here, or is found gone (another broker stopped it,
        after its own last save)."""
        while True:
            await asyncio.sleep(SAVE_EVERY)
            if not await self._save(pod_id, keeper):
                break
        self._loops.pop(pod_id, None)
        self._keepers.pop(pod_id, None)

    async def _save(self, pod_id: str, keeper: Keeper) -> bool:
        """Save what changed; False when the pod no longer answers at all."""
        try:
            changed = await keeper.save()
        except aiohttp.ClientConnectorError:
            log.info("pod %s no longer answers: its settings are no longer watched", pod_id)
            return False
        except _ERRORS as exc:
            self.failures += 1
            log.warning("could not save the settings of %s from pod %s: %s",
                        keeper.store.slug, pod_id, exc,
                        extra={"event": "settings_save_failed"})  # fmt: skip
            return True
        if changed:
            log.info(
                "kept %d settings file(s) of %s from pod %s", changed, keeper.store.slug, pod_id
            )
        return True

    async def stopping(self, pod_id: str, keeper: Keeper | None) -> None:
        """The pod is about to stop: save once more (its keeper, else KEEPER: another
        broker bound it), then forget it."""
        keeper = self._keepers.get(pod_id) or keeper
        await self.forget(pod_id)
        if keeper is not None:
            await self._save(pod_id, keeper)

    async def forget(self, pod_id: str) -> None:
        """Stop watching the pod (no save)."""
        self._keepers.pop(pod_id, None)
        loop = self._loops.pop(pod_id, None)
        if loop is not None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop

    async def close(self) -> None:
        for pod_id in list(self._loops):
            await self.forget(pod_id)
