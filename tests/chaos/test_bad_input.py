"""Bad input everywhere a user or admin can send it: never a 500, never a traceback.

fleet.yaml text and admin API bodies are fuzzed with hypothesis; cookies,
JWTs, header values and paths get the malformed, the huge and the binary.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import string
import time
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey

from broker.admin import Tokens
from broker.auth.jwks import JWKSCache, TokenRejected, essential, verify
from broker.identity import Identity
from fleet import SpecError, connect_redis, parse_spec
from tests.chaos.support import HEADER_AUTH
from tests.support.procs import Broker, write_fleet

VALID_FLEET = """\
backend: local
idle_timeout: 15m
outputs: /tmp/out
profiles:
  - name: default
    display_name: Local GPU
    min: 0
    buffer: 2
    max: 4
    probe: a1111
    schedule:
      - {at: "08:00", days: mon-fri, min: 1}
    local:
      command: [python, stub.py, --port, "{port}", --pod-id, "{pod}"]
      stop_grace: 3s
"""
FLEET_KEYS = ["backend", "profiles", "name", "min", "max", "buffer", "probe", "local", "command",
              "kubernetes", "agones", "schedule", "idle_timeout", "max_session", "outputs", "timezone",
              "gpus", "env", "cwd", "stop_grace", "start_timeout", "activity", "display_name", "gpu",
              "at", "days", "image", "template"]  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
FLEET_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.sampled_from(
        [
            "local",
            "kubernetes",
            "agones",
            "15m",
            "-1s",
            "50%",
            "a1111",
            "http:/x",
            "default",
            "",
            "{port}",
        ]
    )
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(FLEET_KEYS), inner, max_size=5)
    ),
    max_leaves=20,
)
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def check_spec(text: str) -> None:
    try:
        parse_spec(text, "fleet.yaml")
    except SpecError as exc:
        assert str(exc), "a SpecError must say what is wrong"


@FUZZ
@given(st.text(max_size=300))
@example("-_")  # found by this test: ruamel.yaml 0.19.1 raised IndexError on it
@example("x: -_")
def test_fleet_yaml_random_text_raises_only_spec_errors(text: str) -> None:
    check_spec(text)


@FUZZ
@given(st.data())
def test_fleet_yaml_mutations_raise_only_spec_errors(data: st.DataObject) -> None:
    text = VALID_FLEET
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 10))
        insert = data.draw(st.text(alphabet=string.printable + "\t\0\u00e9\ufeff", max_size=6))
        text = text[:at] + insert + text[at + cut :]
    check_spec(text)


@FUZZ
@given(st.dictionaries(st.sampled_from(FLEET_KEYS), FLEET_VALUES, max_size=6))
def test_fleet_yaml_documents_raise_only_spec_errors(doc: dict) -> None:
    check_spec(json.dumps(doc))  # JSON is YAML: any shape, any types, known keys
    base = {"backend": "local", "profiles": [{"name": "default", "max": 2, **doc}]}
    check_spec(json.dumps(base))


# --- raw HTTP: bytes exactly as sent, no client normalising anything -----------------------


def raw(port: int, request: bytes, limit: int = 1 << 20) -> tuple[int, bytes]:
    """Send one request as bytes; (status, body). Status 0: the broker closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while len(data) < limit:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
    if not data.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")):
        return 0, data
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head[9:12]), body


def get(port: int, path: bytes, *headers: bytes) -> tuple[int, bytes]:
    lines = [b"GET " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", *headers]
    return raw(port, b"\r\n".join(lines) + b"\r\n\r\n")


def assert_sane(status: int, body: bytes, what: object) -> None:
    assert status < 500 or status in (502, 503, 504), (what, status, body[:300])
    assert b"Traceback" not in body, (what, body[:300])
    assert b"root:x:0:0" not in body and b"from __future__" not in body, (what, body[:300])


@pytest.fixture
def dev_broker(brokers, tmp_path: Path) -> Broker:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "out", buffer=1, max=2)
    return brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root")


@pytest.fixture
def admin_token(dev_broker: Broker) -> str:
    async def create() -> str:
        redis = connect_redis(dev_broker.env["SDB_REDIS_URL"])
        try:
            return (await Tokens(redis).create("fuzz", Identity("root"), ttl=3600)).token
        finally:
            await redis.aclose()

    return asyncio.run(create())


API_PATHS = ["/fleet", "/sessions", "/sessions/ann/reclaim", "/sessions/%2e%2e/reclaim", "/pods", "/pods/x",
             "/queue", "/reclaims", "/history", "/profiles/default/sizes", "/profiles/nope/sizes",
             "/tokens", "/tokens/abc", "/openapi.json"]  # fmt: skip


@FUZZ
@given(
    method=st.sampled_from(["POST", "PUT", "PATCH", "DELETE"]),
    path=st.sampled_from(API_PATHS),
    body=JSON.map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries(
        {}, optional={"min": JSON, "max": JSON, "buffer": JSON, "name": JSON}
    ).map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=64),
    query=st.sampled_from(["", "?count=-1", "?hours=1e999", "?busy=maybe", "?count=%00"]),
)
def test_admin_api_bodies_never_500(dev_broker: Broker, admin_token: str, method: str, path: str,
                                    body: bytes, query: str) -> None:  # fmt: skip
    if path == "/profiles/default/sizes" and method == "PUT":
        # Sizes within the file's reach: the fuzz must not start a thousand real pods.
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            doc = {
                k: min(v, 2) if isinstance(v, int) and not isinstance(v, bool) else v
                for k, v in doc.items()
            }
            body = json.dumps(doc).encode()
    head = [
        f"{method} /_broker/api/v1{path}{query} HTTP/1.1".encode(),
        b"Host: 127.0.0.1",
        b"Connection: close",
        b"Authorization: Bearer " + admin_token.encode(),
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
    ]
    status, answer = raw(dev_broker.port, b"\r\n".join(head) + b"\r\n\r\n" + body)
    assert status != 0, "the broker dropped the connection"
    assert_sane(status, answer, (method, path, body[:100]))
    assert status != 500


MALFORMED_COOKIES = [
    b"sdb_session=",
    b"sdb_session=garbage",
    b"sdb_session=" + b"A" * 8000,
    b"sdb_session=" + base64.urlsafe_b64encode(b'{"user": "root", "is_admin": true}'),
    b"sdb_session=a.b.c.d.e",
    b"sdb_session=\xff\xfe\x00\x80",
    b"sdb_session=%00%ff; sdb_csrf=\x01",
    b"sdb_session=1; sdb_session=2",
    b"sdb_session=" + b"\xc3\xa9" * 1000,
    b'sdb_session="unterminated',
    b"=;=;;;sdb_session",
    b"sdb_login=" + b"x" * 4000 + b"; sdb_csrf=" + b".." * 100,
]
BROKER_PATHS = [b"/", b"/_broker/login", b"/_broker/logout", b"/_broker/wait", b"/_broker/events",
                b"/_broker/admin", b"/_broker/choose", b"/_broker/api/v1/fleet", b"/_broker/readyz"]  # fmt: skip


def test_malformed_cookies_never_500(dev_broker: Broker) -> None:
    for cookie in MALFORMED_COOKIES:
        for path in BROKER_PATHS:
            status, body = get(dev_broker.port, path, b"Cookie: " + cookie, b"Accept: text/html")
            assert status != 0, (cookie[:40], path)
            assert_sane(status, body, (cookie[:40], path))
            assert status in (200, 302, 303, 400, 401, 403, 404, 405), (cookie[:40], path, status)
            if path == b"/_broker/admin":
                assert status != 200, "a forged cookie opened the admin console"


TRAVERSALS = [
    b"/_broker/../../etc/passwd",
    b"/_broker/..%2f..%2fetc%2fpasswd",
    b"/_broker/%2e%2e/%2e%2e/etc/passwd",
    b"/_broker/static/..%2f..%2fsettings.py",
    b"/_broker/static/../../broker/settings.py",
    b"/_broker/static/%2e%2e%2f%2e%2e%2fbroker%2fsettings.py",
    b"/_broker/static/..%252f..%252fetc%252fpasswd",
    b"/_broker/static/....//....//etc/passwd",
    b"/_broker/static/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    b"/_broker/static/..\\..\\etc\\passwd",
    b"/_broker/admin/../../../etc/passwd",
    b"/_broker/api/v1/../../../../etc/passwd",
    b"/_broker/wait?next=../../etc/passwd",
    b"/_broker/login?next=//evil.example/%2e%2e",
    b"/_broker/%00/etc/passwd",
    b"/_broker/" + b"../" * 200 + b"etc/passwd",
    b"//etc/passwd",
    b"/_broker/templates/base.html",
    b"/_broker/static/" + b"%2e" * 3000,
]


def test_path_traversal_never_escapes_the_app(dev_broker: Broker) -> None:
    for path in TRAVERSALS:
        status, body = get(dev_broker.port, path, b"Accept: text/html")
        assert_sane(status, body, path)
        assert status != 500 and status != 0, (path, status)
        assert b"{% " not in body, (path, "a template's source was served")


@pytest.fixture
def header_broker(brokers) -> Broker:
    return brokers(**HEADER_AUTH)


HEADER_VALUES = [
    b"\x80\x81\xfe\xff",
    b"ann\x00bob",
    b"\xc3\xa9\xe2\x98\x83",
    b"a" * 15000,
    b" " * 100,
    b"../../../../etc/passwd",
    b"ann\tbob",
    b"%0d%0aSet-Cookie: x=1",
    b"\x7f\x01\x1b[31m",
]


def test_huge_or_binary_header_values_never_500(header_broker: Broker) -> None:
    for value in HEADER_VALUES:
        for name in (b"X-Forwarded-User", b"X-Forwarded-Email", b"Cookie", b"Accept", b"Host",
                     b"X-Forwarded-For", b"Authorization", b"Upgrade"):  # fmt: skip
            status, body = get(
                header_broker.port, b"/stub/whoami", b"X-Forwarded-User: ann", name + b": " + value
            )
            assert_sane(status, body, (name, value[:30]))
            assert status != 500, (name, value[:30], status, body[:200])


# --- malformed JWTs (what iap mode verifies on every request), in-process ------------------

KEY = ECKey.generate_key("P-256", parameters={"kid": "k1"})
B64 = st.binary(max_size=80).map(lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode())
HEADERS = st.dictionaries(
    st.sampled_from(["alg", "kid", "typ", "crit", "b64", "jku", "x5u", "zip", "cty"]),
    JSON,
    max_size=4,
) | st.fixed_dictionaries(
    {
        "alg": st.sampled_from(["ES256", "none", "HS256", "RS256"]),
        "kid": st.sampled_from(["k1", "k2"]),
    }
)


def segment(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


TOKENS = (
    st.text(max_size=200)
    | st.builds(lambda h, p, s: f"{segment(h)}.{segment(p)}.{s}", HEADERS, JSON, B64)
    | st.builds(lambda a, b, c: f"{a}.{b}.{c}", B64, B64, B64)
    | st.dictionaries(
        st.sampled_from(["iss", "aud", "exp", "iat", "sub", "email", "nbf"]), JSON
    ).map(lambda claims: jwt.encode({"alg": "ES256", "kid": "k1"}, claims, KEY))
)


@settings(max_examples=300, deadline=None)
@given(TOKENS)
def test_malformed_jwts_are_rejected_never_crash(token: str) -> None:
    async def check() -> None:
        keys = JWKSCache(None, ttl=3600)
        keys._keys = {"k1": KEY}
        keys._fetched_at = time.monotonic()
        async with aiohttp.ClientSession() as http:
            try:
                claims = await verify(
                    token, keys, http, algorithms=("ES256",),
                    claims={"iss": essential("https://cloud.google.com/iap"), "aud": essential("/projects/1"),
                            "exp": essential(), "iat": essential(), "sub": essential(), "email": essential()},
                )  # fmt: skip
            except TokenRejected:
                return
        assert claims["iss"] == "https://cloud.google.com/iap" and claims["aud"] == "/projects/1"

    asyncio.run(check())
