"""The whole path on one machine: header login -> warm pod -> proxied WebUI."""

from __future__ import annotations

import json
import urllib.request

from tests.support.procs import wait_for


def get(url: str, **headers: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_user_lands_in_own_pod(brokers) -> None:
    broker = brokers(SDB_AUTH="header", SDB_TRUSTED_PROXIES="127.0.0.1/32")
    wait_for(lambda: len(broker.pod_records()) >= 2, 20, what="warm pods")
    status, body = wait_for(
        lambda: (
            (r := get(broker.url + "/stub/whoami", **{"X-Forwarded-User": "ann"}))[0] == 200 and r
        ),
        20,
    )
    me = json.loads(body)
    assert me["user"] == "ann"
    # The second warm pod may still be starting: bob waits (503) until it is Ready.
    status, body = wait_for(
        lambda: (
            (r := get(broker.url + "/stub/whoami", **{"X-Forwarded-User": "bob"}))[0] == 200 and r
        ),
        20,
    )
    assert json.loads(body)["user"] == "bob"
    assert json.loads(body)["pod"] != me["pod"]
