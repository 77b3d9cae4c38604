"""`sdbroker serve` refuses unsafe starts; the session cookie is scoped, signed and flagged."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from http.cookies import SimpleCookie

import pytest

from broker.security.cookies import HOST_PREFIX, SESSION_COOKIE
from tests.support.procs import REPO


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::"])
def test_dev_login_refuses_a_non_loopback_bind(host: str) -> None:
    env = {
        **os.environ,
        "SDB_AUTH": "dev",
        "SDB_HOST": host,
        "SDB_FLEET": str(REPO / "fleet.local.yaml"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "broker", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "loopback" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("command", [["serve"], ["fleet", "status"]])
def test_a_misspelt_setting_stops_the_broker(command: list[str]) -> None:
    """SDB_ALLOWED_EMAIL (no S) was ignored, leaving the allow list empty: the site open."""
    env = {**os.environ, "SDB_ALLOWED_EMAIL": "ann@example.com",
           "SDB_FLEET": str(REPO / "fleet.local.yaml")}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "broker", *command], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr == (
        "SDB_ALLOWED_EMAIL: not a setting of the broker (did you mean SDB_ALLOWED_EMAILS?)\n"
    )


def test_bad_settings_are_one_line_and_exit_2() -> None:
    env = {**os.environ, "SDB_PORT": "not-a-port", "SDB_FLEET": str(REPO / "fleet.local.yaml")}
    out = subprocess.run(
        [sys.executable, "-m", "broker", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.startswith("SDB_PORT:") and "Traceback" not in out.stderr


def login(port: int, **headers: str) -> SimpleCookie:
    """Log in through the dev form; the cookies the broker set on the redirect."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/_broker/login", headers=headers)
    resp = conn.getresponse()
    page = resp.read().decode()
    csrf_cookie = resp.getheader("Set-Cookie").split(";")[0]
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    form = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": csrf_cookie, **headers}
    conn.request("POST", "/_broker/login", body=f"csrf_token={token}&user=ann&next=/", headers=form)
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 302
    jar = SimpleCookie()
    for name, value in resp.getheaders():
        if name.lower() == "set-cookie":
            jar.load(value)
    conn.close()
    return jar


def test_session_cookie_flags_and_secure_behind_https(brokers) -> None:
    broker = brokers(SDB_AUTH="dev", SDB_TRUSTED_PROXIES="127.0.0.1/32")
    plain = login(broker.port)[SESSION_COOKIE]
    assert plain["httponly"] and plain["samesite"] == "Lax" and plain["path"] == "/"
    assert not plain["secure"]  # plain http to a loopback broker
    behind_tls = login(broker.port, **{"X-Forwarded-Proto": "https"})
    assert list(behind_tls) == [HOST_PREFIX + SESSION_COOKIE]  # RFC 6265bis 4.1.3.2
    assert behind_tls[HOST_PREFIX + SESSION_COOKIE]["secure"]  # the proxy says https
    assert not behind_tls[HOST_PREFIX + SESSION_COOKIE]["domain"]
    assert plain.value.count(".") == 1  # signed: payload.signature
