"""`header` mode reads oauth2-proxy's groups, so group allow lists and admin groups work there too."""

from __future__ import annotations

import urllib.request

from tests.support.procs import wait_for


def status(base: str, path: str, **headers: str) -> int:
    req = urllib.request.Request(base + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_groups_from_the_trusted_proxy_decide_who_gets_in(brokers) -> None:
    broker = brokers(
        SDB_AUTH="header",
        SDB_TRUSTED_PROXIES="127.0.0.1/32",
        SDB_ALLOWED_GROUPS="artists",
        SDB_ADMIN_GROUPS="ops",
    )
    wait_for(lambda: len(broker.pod_records()) >= 1, 20, what="a pod")
    member = {"X-Forwarded-User": "ann", "X-Forwarded-Groups": "staff, artists"}
    outsider = {"X-Forwarded-User": "bob", "X-Forwarded-Groups": "staff"}
    admin = {"X-Forwarded-User": "cat", "X-Forwarded-Groups": "ops"}
    assert wait_for(
        lambda: status(broker.url, "/stub/whoami", **member) == 200, 20, what="member served"
    )
    assert status(broker.url, "/stub/whoami", **outsider) == 403
    assert status(broker.url, "/_broker/admin", **admin) == 200
    assert status(broker.url, "/_broker/admin", **member) == 403
