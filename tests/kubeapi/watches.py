"""Watch streams: newline-delimited JSON events, bookmarks, timeouts, 410 Expired, dropped streams."""

from __future__ import annotations

import json
import random
from typing import Any

from aiohttp import ClientConnectionResetError, web

from . import errors
from .clock import Clock
from .resources import Resource
from .selectors import FieldSelector, LabelSelector
from .store import Store, Watcher


class WatchStreamer:
    """Serves `?watch=true`. Timeouts and bookmark intervals are simulated seconds."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        rng: random.Random,
        *,
        bookmark_interval: float,
        watch_timeout: float,
    ) -> None:
        self.store, self.clock, self.rng = store, clock, rng
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.opened = 0  # watches served so far

    def drop(self, abrupt: bool = False) -> int:
        """End every open watch: cleanly (the stream ends) or abruptly (the connection is cut)."""
        watchers = self.store.watchers()
        for watcher in watchers:
            watcher.close(abrupt)
        return len(watchers)

    async def error(self, request: web.Request, err: errors.ApiError) -> web.StreamResponse:
        """A watch that fails the way apiservers fail watches: 200 OK, then one ERROR event."""
        resp = _stream()
        await resp.prepare(request)
        await resp.write(_line("ERROR", err.status()))
        return resp

    async def serve(
        self, request: web.Request, res: Resource, ns: str | None
    ) -> web.StreamResponse:
        q = request.query
        labels = LabelSelector.parse(q.get("labelSelector"))
        fields = FieldSelector.parse(q.get("fieldSelector"), res.field_labels)
        initial = _flag(q.get("sendInitialEvents"))
        rv = q.get("resourceVersion") or ""
        try:
            since = None if initial or rv in ("", "0") else int(rv)
        except ValueError as err:
            raise errors.bad_request(f"invalid resource version: {rv}") from err
        bookmarks = _flag(q.get("allowWatchBookmarks"))
        if "timeoutSeconds" in q:
            timeout = float(q["timeoutSeconds"])
        else:
            timeout = self.rng.uniform(self.watch_timeout, 2 * self.watch_timeout)
        try:
            watcher = self.store.watch(res, ns, labels, fields, since)
        except errors.ApiError as err:
            return await self.error(request, err)
        self.opened += 1
        resp = _stream()
        try:
            await resp.prepare(request)
            if initial:
                await self._send(resp, watcher)
                if bookmarks:
                    await resp.write(_bookmark(res, self.store.resource_version, initial_end=True))
            await self._pump(resp, watcher, res, timeout, bookmarks)
        except (ConnectionResetError, ClientConnectionResetError):
            pass
        finally:
            self.store.unwatch(watcher)
        if watcher.abrupt and request.transport is not None:
            request.transport.abort()
        return resp

    async def _pump(
        self,
        resp: web.StreamResponse,
        watcher: Watcher,
        res: Resource,
        duration: float,
        bookmarks: bool,
    ) -> None:
        deadline = self.clock.time() + duration
        next_bookmark = self.clock.time() + self.bookmark_interval
        while True:
            await self._send(resp, watcher)
            if watcher.closed:
                return
            now = self.clock.time()
            if now >= deadline:
                if bookmarks:
                    await resp.write(_bookmark(res, self.store.resource_version))
                return
            if bookmarks and now >= next_bookmark:
                await resp.write(_bookmark(res, self.store.resource_version))
                next_bookmark = now + self.bookmark_interval
            until = min(deadline, next_bookmark) if bookmarks else deadline
            await self.clock.wait(watcher.wake, until - now)

    async def _send(self, resp: web.StreamResponse, watcher: Watcher) -> None:
        items = watcher.take()
        if items and not watcher.abrupt:
            await resp.write(
                "".join(f'{{"type":"{kind}","object":{obj}}}\n' for kind, obj in items).encode()
            )


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _stream() -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    return resp


def _line(kind: str, obj: dict[str, Any]) -> bytes:
    return (json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n").encode()


def _bookmark(res: Resource, rv: int, initial_end: bool = False) -> bytes:
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return _line("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta})
