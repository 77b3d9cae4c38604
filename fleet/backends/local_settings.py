"""The local backend's keeper of people's WebUI settings (fleet/webui_settings.py).

On one machine the broker is the trusted side: it restores the user's kept settings
into the pod it binds (before the claim is marked bound, so before their first
request), saves them every SAVE_EVERY while the pod is claimed when they changed,
and once more when the pod is stopped while still claimed (a reclaim), so the last
change is kept. A failure is logged and counted and never fails a claim or a stop.
On Kubernetes and Agones the pod's agent does the same with the same module.
The backend's two calls (a claim bound: keep_claimed; a pod stopping: last_save)
are at the end, so local.py holds no settings logic of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from ..slug import slugify
from ..spec import FleetSpec, Profile
from ..webui_settings import KINDS as SETTINGS_KINDS
from ..webui_settings import Keeper, SettingsError, Store, WebUISettings
from .local_records import read_pod

log = logging.getLogger(__name__)
#: Seconds between two looks at a claimed pod's settings (a GET or two, a digest).
SAVE_EVERY = 30.0
_ERRORS = (OSError, SettingsError, aiohttp.ClientError, TimeoutError)
#: Told (profile, step "restore"|"save", outcome "ok"|"failed") of each restore and each
#: save that looked at the pod (broker/metrics.py: sdbroker_settings_total).
OnSettings = Callable[[str, str, str], None]


class LocalSettings:
    """One Keeper per claimed pod this broker bound, and its save loop."""

    def __init__(self, on_outcome: OnSettings | None = None) -> None:
        self._keepers: dict[str, Keeper] = {}
        self._loops: dict[str, asyncio.Task[None]] = {}
        #: Restores and saves that failed, since start (for logs and tests).
        self.failures = 0
        self.on_outcome = on_outcome
        #: Each keeper's profile, for on_outcome (weak: a one-save keeper is dropped after).
        self._profiles: weakref.WeakKeyDictionary[Keeper, str] = weakref.WeakKeyDictionary()

    def keeper(
        self,
        http: aiohttp.ClientSession,
        addr: str,
        kind: str,
        home: str,
        outputs_root: str,
        slug: str,
        profile: str = "",
    ) -> Keeper:
        keeper = Keeper(WebUISettings(http, addr, kind, home), Store(outputs_root, slug, kind))
        self._profiles[keeper] = profile
        return keeper

    def _count(self, keeper: Keeper, step: str, ok: bool) -> None:
        if not ok:
            self.failures += 1
        if self.on_outcome is not None:
            self.on_outcome(self._profiles.get(keeper, ""), step, "ok" if ok else "failed")

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
            self._count(keeper, "restore", True)
        except _ERRORS as exc:
            self._count(keeper, "restore", False)
            log.warning("could not restore the settings of %s into pod %s: %s",
                        keeper.store.slug, pod_id, exc,
                        extra={"event": "settings_restore_failed"})  # fmt: skip
        except Exception:  # a bug here must not cost the person their session
            self._count(keeper, "restore", False)
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
            self._count(keeper, "save", False)
            log.warning("could not save the settings of %s from pod %s: %s",
                        keeper.store.slug, pod_id, exc,
                        extra={"event": "settings_save_failed"})  # fmt: skip
            return True
        self._count(keeper, "save", True)
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


async def keep_claimed(
    settings: LocalSettings,
    records_dir: Path,
    pod_id: str,
    addr: str,
    slug: str,
    profile: Profile,
    http: aiohttp.ClientSession,
    outputs_path: Callable[[str], str],
) -> None:
    """The pod's own folder ({home}) is where its --styles-file and --ui-config-file are."""
    if profile.probe not in SETTINGS_KINDS:
        return
    data = await asyncio.to_thread(read_pod, records_dir, pod_id)
    if data is None:
        return
    keeper = settings.keeper(
        http, addr, profile.probe, str(data.get("home") or ""), outputs_path(""), slug,
        profile.name,
    )  # fmt: skip
    await settings.claimed(pod_id, keeper)


async def last_save(
    settings: LocalSettings,
    data: dict[str, Any],
    spec: FleetSpec,
    outputs_path: Callable[[str], str],
) -> None:
    """A claimed pod about to stop (a reclaim): its user's settings, saved once more."""
    user = data.get("user")
    try:
        profile = spec.profile(data["profile"])
    except KeyError:
        profile = None
    if not user or profile is None or not profile.keep_settings:
        return
    if settings.watching(data["id"]) or profile.probe not in SETTINGS_KINDS:
        await settings.stopping(data["id"], None)
        return
    # Bound by another broker: a keeper made here, for this one save.
    async with aiohttp.ClientSession(trust_env=False) as http:
        keeper = settings.keeper(
            http, data["addr"], profile.probe, str(data.get("home") or ""),
            outputs_path(""), slugify(user), profile.name,
        )  # fmt: skip
        await settings.stopping(data["id"], keeper)
