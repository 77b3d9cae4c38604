"""A SIGTERM during an activity flush loses no activity (issue 18, item 2).

Before: shutdown stopped APScheduler without waiting (`shutdown(wait=False)`),
found the recorder's batch already taken by the running flush, and closed
Redis under it: the flush failed, put the batch back, and the process exited
with it. A user active in the last flush interval before a rolling restart
looked idle for up to one more interval, and could be reclaimed early.

A real broker talks to a real Redis through a loopback relay that holds the
flush's ZADD until released, so the SIGTERM lands while the flush is in flight.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
import redis

from fleet import keys
from tests.support.procs import wait_for

HOLD = 3.0  # seconds the relay holds the flush: far longer than the old shutdown took


class HoldingRelay:
    """TCP relay to Redis that, once armed, holds any chunk writing the activity set."""

    def __init__(self, target: str) -> None:
        url = urlparse(target)
        self.target = (url.hostname or "127.0.0.1", url.port or 6379)
        self.armed = threading.Event()
        self.holding = threading.Event()  # a flush's ZADD is held right now
        self.release = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.server.getsockname()[1]}"
        self._sockets: list[socket.socket] = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.server.accept()
                upstream = socket.create_connection(self.target)
                self._sockets += [client, upstream]
                threading.Thread(
                    target=self._pipe, args=(client, upstream, True), daemon=True
                ).start()
                threading.Thread(
                    target=self._pipe, args=(upstream, client, False), daemon=True
                ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, to_redis: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                if to_redis and self.armed.is_set() and self._writes_activity(chunk):
                    self.holding.set()
                    self.release.wait(HOLD)
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    @staticmethod
    def _writes_activity(chunk: bytes) -> bool:
        return b"\r\nZADD\r\n" in chunk.upper() and keys.ACTIVITY.encode() in chunk

    def close(self) -> None:
        self.release.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def relay(redis_url: str) -> Iterator[HoldingRelay]:
    relay = HoldingRelay(redis_url)
    yield relay
    relay.close()


def get(url: str, user: str) -> int:
    request = urllib.request.Request(url, headers={"X-Forwarded-User": user})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:  # 503 while a pod starts
        return exc.code


def test_sigterm_during_an_activity_flush_loses_no_activity(
    brokers, relay: HoldingRelay, redis_url: str
) -> None:
    broker = brokers(
        redis=relay.url,
        SDB_AUTH="header",
        SDB_TRUSTED_PROXIES="127.0.0.1/32",
        SDB_ACTIVITY_FLUSH="0.2s",
        SDB_REAP_INTERVAL="0",
        SDB_STOP_PODS_ON_EXIT="false",
    )
    direct = redis.Redis.from_url(redis_url)
    wait_for(lambda: get(broker.url + "/", "ann") == 200, 30, what="ann's WebUI")
    wait_for(lambda: direct.zscore(keys.ACTIVITY, "ann") is not None, 10, what="a first flush")

    relay.armed.set()
    acted = time.time()
    assert get(broker.url + "/", "ann") == 200  # GET / counts as activity (a1111 rules)
    assert relay.holding.wait(10), "no activity flush reached Redis"
    assert direct.zscore(keys.ACTIVITY, "ann") < acted  # the flush in flight holds it

    assert broker.proc is not None
    broker.proc.terminate()
    with contextlib.suppress(Exception):
        broker.proc.wait(HOLD)  # the old shutdown was over long before this
    relay.release.set()
    broker.stop()
    score = direct.zscore(keys.ACTIVITY, "ann")
    direct.close()
    assert score is not None and score >= acted, (
        f"activity at {acted:.3f} lost on shutdown (Redis has {score}); log:\n{broker.log_text()}"
    )
