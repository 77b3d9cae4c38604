"""The agent's loops and the state they share.

One loop watches the WebUI (ready or not) and keeps its output folders aimed
at the right place: the pod-local holding folder until the claim is seen,
then the user's folder (moving in what was held). One learns the claim
(Downward API files, or the Agones watch); on Agones two more tell the
sidecar Ready once and ping Health. Each
loop is a named task; any task that crashes or a fatal finding stops the
rest, so the container exits and the pod shows the failure instead of
lingering half-working.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from .agones import BEFORE_READY, AgonesSDK, SDKError
from .claims import Claim, ClaimError, DownwardAPI, claim_from_gameserver, gameserver_state
from .config import Config
from .holding import move_tree
from .keeping import KeptSettings
from .webui import REQUEST_ERRORS, Check, WebUI

log = logging.getLogger("sdb-agent")

EXIT_FATAL_CONFIG = 2  # a setting or a volume is wrong: fix the pod template
EXIT_FATAL_CLAIM = 3  # the pod's record broke an invariant (its user changed)
RETRY_MAX = 10.0


class Agent:
    def __init__(
        self,
        config: Config,
        webui: WebUI,
        sdk: AgonesSDK | None,
        settings: KeptSettings | None = None,
    ) -> None:
        self.config = config
        self.webui = webui
        self.sdk = sdk
        self.settings = settings  # None: settings are not kept (SDB_AGENT_KEEP_SETTINGS=0)
        #: The slug whose folder the WebUI saves into, and which exists on the volume.
        self.settled_for = ""
        self.ready = False
        self.reason = "not checked yet"
        self.last_answer = time.monotonic()
        self.claim: Claim | None = None
        self.outputs: Path | None = None
        self.sdk_ready_sent = False
        self.health_pings = 0
        self.exit_code = 0
        self.became_ready = asyncio.Event()
        self.stopping = asyncio.Event()
        self._warned: set[str] = set()

    # ----- state seen by the HTTP endpoints -----

    def healthy(self) -> bool:
        """Alive: the WebUI answered HTTP (even 503 while loading) within the grace period."""
        return time.monotonic() - self.last_answer < self.config.health_grace

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "mode": self.config.mode,
            "webui": self.config.webui,
            "ready": self.ready,
            "reason": self.reason,
            "healthy": self.healthy(),
            "user": self.claim.slug if self.claim else None,
            "outputs": str(self.outputs) if self.outputs else None,
            "layout": "split" if self.config.split else "one container",
        }
        if self.sdk is not None:
            body["agones"] = {"ready_sent": self.sdk_ready_sent, "health_pings": self.health_pings}
        return body

    def fatal(self, message: str, code: int) -> None:
        if not self.stopping.is_set():
            log.critical("fatal: %s", message)
            self.exit_code = code
            self.stopping.set()

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    # ----- the loops -----

    async def run(self) -> int:
        """Run every loop until SIGTERM (exit 0) or a fatal finding (its exit code)."""
        try:
            await self.webui.prepare()
        except OSError as exc:
            self.fatal(f"cannot prepare the outputs link: {exc}", EXIT_FATAL_CONFIG)
            return self.exit_code
        loops: dict[str, Callable[[], Awaitable[None]]] = {"webui": self._webui_loop}
        if self.config.mode == "kubernetes":
            loops["downward-api"] = self._downward_loop
        if self.settings is not None and self.config.mode != "standalone":
            loops["settings"] = partial(self.settings.run, self._settled_claim, lambda: self.ready)
        if self.sdk is not None:
            loops |= {
                "agones-ready": self._agones_ready,
                "agones-health": self._agones_health,
                "agones-watch": self._agones_watch,
            }
        tasks = [
            asyncio.create_task(
                self._guard(name, loop, may_finish=name == "agones-ready"), name=name
            )
            for name, loop in loops.items()
        ]
        try:
            await self.stopping.wait()
        finally:
            for task in reversed(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.settings is not None and self.exit_code == 0:
                # SIGTERM on a claimed pod is a reclaim: the last change is kept.
                await self.settings.save()
        return self.exit_code

    def _settled_claim(self) -> Claim | None:
        """The claim, once the WebUI saves into its user's folder (which then exists)."""
        claim = self.claim
        return claim if claim is not None and self.settled_for == claim.slug else None

    async def _guard(
        self, name: str, loop: Callable[[], Awaitable[None]], may_finish: bool = False
    ) -> None:
        """A loop that ends (unless it may) or crashes is a bug: log it and stop (kopf's habit)."""
        try:
            await loop()
            if not may_finish:
                self.fatal(f"task {name} ended unexpectedly", 1)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task %s crashed", name)
            self.fatal(f"task {name} crashed", 1)

    async def _webui_loop(self) -> None:
        while True:
            check = await self.webui.check()
            if check.answered:
                self.last_answer = time.monotonic()
            if check.ready and self.config.mode != "standalone":  # standalone: readiness only
                check = await self._settle_outputs(check)
            if check.ready != self.ready or (not check.ready and check.reason != self.reason):
                level = logging.INFO if check.ready or not self.ready else logging.WARNING
                log.log(
                    level, "WebUI %s: %s", "ready" if check.ready else "not ready", check.reason
                )
            self.ready, self.reason = check.ready, check.reason
            if check.ready:
                self.became_ready.set()
            await asyncio.sleep(self.config.poll_interval)

    async def _settle_outputs(self, check: Check) -> Check:
        """Point the WebUI where it saves, and move what it saved into the user's folder.

        Part of readiness: /ready only says 200 once images would land in the
        right place, also after the WebUI restarted with its default folders.
        One container: the WebUI saves into the holding folder, then (claimed)
        into the user's folder on the volume. Split: it always saves into the
        handoff folder (its own ``/outputs``, under ``<slug>/`` once claimed, the
        folder the broker names too), and only this agent touches the volume.
        """
        config, slug = self.config, self.claim.slug if self.claim else ""
        target = config.outputs_root / slug if slug else None  # on the volume
        if config.webui_outputs is not None:
            shown = config.webui_outputs / slug if slug else config.webui_outputs
        else:
            shown = target or config.holding_dir
        # Split: the volume is this container's alone, so nobody else needs to
        # write there; one container: the WebUI (same group) saves there itself.
        mode = 0o755 if config.split else 0o775
        try:
            # In threads: the outputs volume is often NFS, and slow file calls
            # must not stall the probe endpoints served by this event loop.
            if not config.split:
                await asyncio.to_thread(shown.mkdir, mode=mode, parents=not slug, exist_ok=True)
            changed = await self.webui.point_outputs(shown)
            moved = 0
            if target is not None:
                strip = slug if config.split else ""
                moved = await asyncio.to_thread(
                    move_tree, config.holding_dir, target, strip=strip, mode=mode
                )
        except PermissionError as exc:
            self.fatal(
                f"cannot write {target or shown}: {exc} (the outputs volume must be writable "
                f"by uid {os.getuid()}: chown it on the share)",
                EXIT_FATAL_CONFIG,
            )
            return Check(False, f"cannot write {target or shown}", check.answered)
        except (OSError, *REQUEST_ERRORS) as exc:
            return Check(False, f"cannot point outputs at {shown}: {exc}", check.answered)
        if changed:
            again = self.outputs == shown
            log.info("outputs %s %s", "re-applied (WebUI restarted?) to" if again else "->", shown)
            self.outputs = shown
        self.settled_for = slug
        if moved:
            what = "" if config.split else " made before the claim was seen"
            log.info("moved %d file(s)%s into %s", moved, what, target)
        return check

    def on_claim(self, claim: Claim | None) -> None:
        """A pod serves one user, ever: a second, different user is fatal, never obeyed."""
        if claim is None or claim == self.claim:
            return
        if self.claim is None:
            log.info("claimed by %s (folder %s)", claim.identity or "?", claim.slug)
            self.claim = claim
        elif claim.slug != self.claim.slug:
            self.fatal(
                f"pod already belongs to {self.claim.slug!r} but is now labelled "
                f"{claim.slug!r}; single-use pods never change hands",
                EXIT_FATAL_CLAIM,
            )

    def _on_record(self, read: Callable[[], Claim | None], source: str) -> None:
        try:
            self.on_claim(read())
        except ClaimError as exc:
            self._warn_once(f"claim:{exc}", "ignoring the claim in %s: %s", source, exc)

    async def _downward_loop(self) -> None:
        files = DownwardAPI(self.config.labels_file, self.config.annotations_file)
        while True:
            try:
                self._on_record(files.read, str(files.labels_file))
            except OSError as exc:
                self._warn_once(f"downward:{exc}", "cannot read %s: %s", files.labels_file, exc)
            await asyncio.sleep(self.config.poll_interval)

    async def _agones_ready(self) -> None:
        """Tell Agones Ready once the WebUI is, unless the GameServer is already past it."""
        assert self.sdk is not None
        await self.became_ready.wait()
        delay = self.config.poll_interval
        while True:
            try:
                state = gameserver_state(await self.sdk.gameserver())
                if state not in BEFORE_READY:
                    log.info("GameServer is %s already; not calling Ready", state)
                    return
                await self.sdk.ready()
                self.sdk_ready_sent = True
                log.info("told Agones Ready (GameServer was %s)", state or "unknown")
                return
            except (SDKError, asyncio.TimeoutError) as exc:
                self._warn_once("sdk-ready", "Agones SDK not reachable yet, retrying: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _agones_health(self) -> None:
        """Ping while the WebUI lives; silence past the grace lets Agones replace the pod."""
        assert self.sdk is not None
        while True:
            if self.healthy():
                try:
                    await self.sdk.health()
                    self.health_pings += 1
                except (SDKError, asyncio.TimeoutError) as exc:
                    self._warn_once("sdk-health", "Agones health ping failed: %s", exc)
            else:
                self._warn_once("unhealthy", "WebUI silent too long: no more Agones health pings")
            await asyncio.sleep(self.config.health_interval)

    async def _agones_watch(self) -> None:
        """Learn allocation labels; GET first on each (re)connect, then follow the stream."""
        assert self.sdk is not None
        sdk, delay = self.sdk, self.config.poll_interval
        while True:
            try:
                self._on_record(
                    partial(claim_from_gameserver, await sdk.gameserver()), "GameServer"
                )
                async for update in sdk.watch():
                    self._on_record(partial(claim_from_gameserver, update), "GameServer")
                    delay = self.config.poll_interval
            except (SDKError, asyncio.TimeoutError) as exc:
                self._warn_once(
                    f"watch:{type(exc).__name__}", "Agones watch: %s; reconnecting", exc
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
