"""`rediss://` with AUTH, as Memorystore Standard runs it: a real TLS-only redis-server
with a password, the password and the CA as files (a mounted Kubernetes Secret).

Before this, SDB_REDIS_PASSWORD_FILE and SDB_REDIS_TLS_CA_FILE did not exist (the
broker refused them as unknown settings) and a password could only sit in the URL,
i.e. in the Deployment's plain env.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis

from fleet import StoreUnavailable, keys
from fleet.redis_client import RedisConfigError, RedisSettings, connect_redis, redacted
from tests.redis.servers import Pki, ServerProcess, make_pki, tls_server
from tests.support.procs import REPO, wait_for, write_fleet

PASSWORD = "s3cret-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[ServerProcess]:
    process = tls_server(tmp_path_factory.mktemp("tls-redis"), pki, PASSWORD).start()
    yield process
    process.stop()


@pytest.fixture
def url(server: ServerProcess) -> str:
    return f"rediss://127.0.0.1:{server.port}/0"


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")  # as `kubectl create secret --from-file` may keep it
    return path


async def test_tls_and_password_from_files(url: str, pki: Pki, password_file: Path) -> None:
    """The server has no plain port and requires AUTH: a round trip proves both."""
    client = connect_redis(
        url, options=RedisSettings(password_file=password_file, tls_ca_file=pki.ca)
    )
    try:
        assert await client.set("tls-probe", "1") is True
        assert await client.get("tls-probe") == "1"
    finally:
        await client.aclose()


async def test_a_server_signed_by_another_ca_is_refused(
    url: str, tmp_path: Path, password_file: Path
) -> None:
    other = make_pki(tmp_path / "other", "other")
    client = connect_redis(
        url, options=RedisSettings(password_file=password_file, tls_ca_file=other.ca)
    )
    try:
        with pytest.raises(StoreUnavailable, match="certificate verify failed"):
            await client.ping()
    finally:
        await client.aclose()


async def test_a_wrong_or_missing_password_is_refused_and_never_shown(
    url: str, pki: Pki, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-" + PASSWORD)
    for options in (
        RedisSettings(tls_ca_file=pki.ca),
        RedisSettings(password_file=wrong, tls_ca_file=pki.ca),
    ):
        client = connect_redis(url, options=options)
        try:
            with pytest.raises(StoreUnavailable) as caught:
                await client.ping()
        finally:
            await client.aclose()
        assert PASSWORD not in str(caught.value) and PASSWORD not in repr(client)


async def test_a_rotated_password_is_read_on_the_next_connection(
    url: str, pki: Pki, password_file: Path
) -> None:
    """The kubelet rewrites a mounted Secret in place: new connections use the new password."""
    client = connect_redis(
        url, options=RedisSettings(password_file=password_file, tls_ca_file=pki.ca)
    )
    rotated = PASSWORD + "-rotated"
    try:
        await client.config_set("requirepass", rotated)
        await asyncio.to_thread(password_file.write_text, rotated)
        await client.connection_pool.disconnect()
        assert await client.ping() is True
    finally:
        await client.config_set("requirepass", PASSWORD)
        await client.aclose()


async def test_a_client_certificate_is_presented(
    url: str, pki: Pki, password_file: Path, tmp_path: Path
) -> None:
    """The server checks a presented certificate against its CA: ours passes, a stranger's
    fails, so the files really are sent (for servers that require client certificates)."""
    ours = RedisSettings(
        password_file=password_file, tls_ca_file=pki.ca,
        tls_cert_file=pki.client_cert, tls_key_file=pki.client_key,
    )  # fmt: skip
    client = connect_redis(url, options=ours)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()
    other = make_pki(tmp_path / "other", "other")
    stranger = ours.model_copy(
        update={"tls_cert_file": other.client_cert, "tls_key_file": other.client_key}
    )
    client = connect_redis(url, options=stranger)
    try:
        with pytest.raises(StoreUnavailable):
            await client.ping()
    finally:
        await client.aclose()


def test_settings_that_cannot_work_are_named_without_the_password(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(
        RedisConfigError, match="SDB_REDIS_TLS_CA_FILE: is set but SDB_REDIS_URL is not rediss://"
    ):
        connect_redis("redis://10.0.0.3:6378/0", options=RedisSettings(tls_ca_file=pki.ca))
    with pytest.raises(
        RedisConfigError, match="SDB_REDIS_PASSWORD_FILE: .* is not a readable file"
    ):
        connect_redis(
            "rediss://10.0.0.3:6378/0", options=RedisSettings(password_file=tmp_path / "nope")
        )
    with pytest.raises(RedisConfigError) as caught:
        connect_redis(f"redis-cluster://:{PASSWORD}@10.0.0.3/0", options=RedisSettings())
    assert PASSWORD not in str(caught.value) and "Redis Cluster is not supported" in str(
        caught.value
    )
    assert redacted(f"rediss://default:{PASSWORD}@h:6378/0") == "rediss://default:***@h:6378/0"


def get(url: str, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_broker_serves_from_a_tls_redis_with_auth(
    brokers, url: str, pki: Pki, password_file: Path
) -> None:
    """`sdbroker serve` with the settings the Memorystore component gives it: a user gets
    a WebUI, the claim is in the TLS Redis, and the password is in no log line."""
    admin = sync_redis.Redis.from_url(url, password=PASSWORD, ssl_ca_certs=str(pki.ca))
    admin.flushall()
    broker = brokers(
        redis=url,
        SDB_REDIS_PASSWORD_FILE=str(password_file),
        SDB_REDIS_TLS_CA_FILE=str(pki.ca),
        SDB_AUTH="header",
        SDB_TRUSTED_PROXIES="127.0.0.1/32",
    )
    status, body = wait_for(
        lambda: (
            (r := get(broker.url + "/stub/whoami", **{"X-Forwarded-User": "ann"}))[0] == 200 and r
        ),
        30,
        what="ann's WebUI",
    )
    pod = json.loads(body)["pod"]
    assert admin.hget(keys.claim("ann"), "pod") == pod.encode()
    assert PASSWORD not in broker.log_text()
    admin.close()


async def test_a_memorystore_like_certificate_needs_the_hostname_check_off(
    tmp_path: Path, password_file: Path
) -> None:
    """A server certificate naming 127.0.0.1 in its CN only (no subjectAltName), as
    Memorystore's do: refused with the hostname check, served without it, and still
    refused without it when signed by a CA other than the instance's own."""
    pki = make_pki(tmp_path / "pki", "cn-only", san=False)
    server = tls_server(tmp_path / "redis", pki, PASSWORD).start()
    url = f"rediss://127.0.0.1:{server.port}/0"
    other = make_pki(tmp_path / "other", "other", san=False)
    options = RedisSettings(password_file=password_file, tls_ca_file=pki.ca)
    try:
        for check, ca, works in [
            (True, pki.ca, False),
            (False, pki.ca, True),
            (False, other.ca, False),
        ]:
            client = connect_redis(
                url,
                options=options.model_copy(update={"tls_check_hostname": check, "tls_ca_file": ca}),
            )
            try:
                if works:
                    assert await client.ping() is True
                else:
                    with pytest.raises(StoreUnavailable, match="certificate verify failed"):
                        await client.ping()
            finally:
                await client.aclose()
    finally:
        server.stop()


def test_the_reaper_cronjob_reads_the_same_files(
    url: str, pki: Pki, password_file: Path, tmp_path: Path
) -> None:
    """`python -m reaper --once` with the CronJob's env (components/memorystore): one
    cycle against the TLS Redis (exit 0); without the password file it is refused
    (exit 1, a JSON line naming no secret)."""
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "outputs")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SDB_")},
        "SDB_REDIS_URL": url,
        "SDB_REDIS_TLS_CA_FILE": str(pki.ca),
        "SDB_FLEET": str(fleet),
        "SDB_DATA_DIR": str(tmp_path / "data"),
    }
    for password, code in [(True, 0), (False, 1)]:
        extra = {"SDB_REDIS_PASSWORD_FILE": str(password_file)} if password else {}
        run = subprocess.run(
            [sys.executable, "-m", "reaper", "--once"],
            env=env | extra, cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == code, run.stderr
        line = json.loads(run.stdout.strip().splitlines()[-1])
        assert ("error" in line) == (code == 1)
        assert PASSWORD not in run.stdout + run.stderr
