"""A periodic task that fails is retried with backoff and shows in /_broker/readyz, which
stays 200 (issue 18, item 2; readiness never depends on Redis: test_readiness.py).

A real broker on a real Redis; the failure is a natural one: the history list of a
profile replaced by a string (a bad restore), so each sample gets WRONGTYPE back.
Before: readyz said nothing of background work, and APScheduler retried at the same
pace however often the job failed.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import redis

from fleet import keys
from tests.support.procs import wait_for


def readyz(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url + "/_broker/readyz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def history_line(body: str) -> str:
    return next((line for line in body.splitlines() if line.startswith("task history-sample:")), "")


def test_a_failing_periodic_task_is_retried_with_backoff_and_shown_in_readyz(
    brokers, redis_url: str
) -> None:
    broker = brokers(SDB_HISTORY_INTERVAL="1s", SDB_REAP_INTERVAL="0")
    status, body = readyz(broker.url)
    assert status == 200 and "task activity-flush: " in body and "task controller: " in body

    direct = redis.Redis.from_url(redis_url)
    direct.delete(keys.history("default"))
    direct.set(keys.history("default"), "not a list")
    waits: list[float] = []

    def failing_twice() -> bool:
        status, body = readyz(broker.url)
        assert status == 200, body  # a failing task never fails readiness
        line = history_line(body)
        found = re.search(r"\((\w+)\), (\d+) in a row, again in (\d+)s", line)
        if found and int(found[2]) >= 3:
            waits.append(float(found[3]))
            return True
        return False

    wait_for(failing_twice, 30, what="the history sample failing three times in a row")
    assert waits[0] >= 1  # the third try waits longer than the interval (1 s): backoff
    assert "WRONGTYPE" not in readyz(broker.url)[1]  # only the error's type, to anyone

    direct.delete(keys.history("default"))
    wait_for(
        lambda: "in a row" not in (line := history_line(readyz(broker.url)[1])) and " ok " in line,
        30,
        what="the history sample recovering",
    )
    direct.close()
