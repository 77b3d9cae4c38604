"""The home page's presence channel in a real Chromium: while /_broker/ is open the
person has a tab, and closing it ends their session as "gone" (reclaim_when_gone).

The fleet keeps idle sessions a minute but ends them 2 s after the last tab closed,
so an end within seconds is the closed page's doing.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser

from fleet import keys
from tests.browser import support
from tests.support.procs import STUB, wait_for

pytestmark = pytest.mark.browser

FLEET = """\
backend: local
idle_timeout: 60s
outputs: {outputs}
profiles:
  - name: default
    buffer: 1
    max: 3
    probe: a1111
    reclaim_when_gone: 2s
    local:
      command: [python, {stub}, --port, "{{port}}", --pod-id, "{{pod}}", --delay, "0.3"]
      stop_grace: 3s
"""


def tabs_open(client: redis.Redis, user: str) -> int:
    """What the reaper reads: the user's open tab connections on every live broker process."""
    live = client.zrangebyscore(keys.PRESENCE_PROCS, f"({time.time()!r}", "+inf")
    return sum(int(client.hget(keys.presence(p), user) or 0) for p in live)


def test_the_open_home_page_keeps_the_session_and_closing_it_ends_it_as_gone(
    brokers, tmp_path: Path, browser: Browser, redis_url: str
) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET.format(outputs=tmp_path / "out", stub=STUB))
    broker = brokers(
        fleet=fleet, SDB_AUTH="dev", SDB_REAP_INTERVAL="0.5s", SDB_ACTIVITY_FLUSH="0.2s"
    )
    wait_for(lambda: len(broker.pod_records()) >= 1, 20, what="a warm pod")
    page = support.log_in(browser, broker.url, "alice")
    page.wait_for_selector("#pod-id", timeout=30_000)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        pod = client.hget(keys.claim("alice"), "pod")
        page.goto(broker.url + "/_broker/")
        wait_for(lambda: tabs_open(client, "alice") == 1, 10, what="the page's presence")
        time.sleep(5)  # 2.5 x reclaim_when_gone, nothing clicked: the open page keeps it
        assert client.hget(keys.claim("alice"), "pod") == pod
        page.context.close()
        wait_for(lambda: not client.exists(keys.claim("alice")), 30, what="the session's end")
        wait_for(lambda: client.xlen(keys.AUDIT) > 0, 10, what="the audit entry")
        assert [f["reason"] for _, f in client.xrange(keys.AUDIT)] == ["gone"]
    finally:
        client.close()
