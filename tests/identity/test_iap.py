"""iap mode: only IAP's signed assertion gets anyone anywhere, over HTTP and WebSocket.

Every forged request is answered 401 and never proxied: no pod is claimed in
Redis and no WebUI's access log ever sees the request's marker.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from broker.security.signing import Signer
from tests.support.procs import Broker, wait_for

from .helpers import (
    assert_spoofs_dropped,
    claims_in_redis,
    pod_log_lines,
    redis_url,
    request,
    websocket_status,
)
from .iap_keys import AUDIENCE, IapKeys

ANN, BOB = "ann@example.com", "bob@example.com"
ASSERTION = "x-goog-iap-jwt-assertion"
PLAIN_EMAIL = "x-goog-authenticated-user-email"
PLAIN_ID = "x-goog-authenticated-user-id"
Forge = Callable[[IapKeys], list[tuple[str, str]]]


def now() -> int:
    return int(time.time())


#: What someone who did not come through IAP might send; each must be 401.
FORGED: dict[str, Forge] = {
    "no token": lambda k: [],
    "malformed: not a JWT": lambda k: [(ASSERTION, "not-a-jwt")],
    "malformed: garbage parts": lambda k: [(ASSERTION, "eyJhbGciOi.J9eyJzdWIi.Oi0xfQ")],
    "malformed: JWE-shaped": lambda k: [(ASSERTION, "a.b.c.d.e")],
    "alg none": lambda k: [(ASSERTION, k.forge_alg_none(ANN))],
    "HS256 signed with the public key": lambda k: [(ASSERTION, k.forge_hs256_with_public_key(ANN))],
    "RS256": lambda k: [(ASSERTION, k.forge_rs256(ANN))],
    "unknown kid": lambda k: [(ASSERTION, k.forge_unknown_kid(ANN))],
    "known kid, another key": lambda k: [(ASSERTION, k.forge_known_kid_other_key(ANN))],
    "no kid": lambda k: [(ASSERTION, k.mint(ANN, kid=None))],
    "payload swapped under a genuine signature": lambda k: [
        (ASSERTION, k.forge_swapped_payload(BOB, ANN))
    ],
    "wrong aud": lambda k: [(ASSERTION, k.mint(ANN, aud="/projects/1/global/backendServices/2"))],
    "aud as a list": lambda k: [(ASSERTION, k.mint(ANN, aud=[AUDIENCE, "other"]))],
    "wrong iss": lambda k: [(ASSERTION, k.mint(ANN, iss="https://accounts.google.com"))],
    "expired beyond leeway": lambda k: [(ASSERTION, k.mint(ANN, iat=now() - 900, exp=now() - 61))],
    "iat in the future beyond leeway": lambda k: [
        (ASSERTION, k.mint(ANN, iat=now() + 120, exp=now() + 900))
    ],
    "no email claim": lambda k: [(ASSERTION, k.mint(ANN, email=None))],
    "valid token, mismatching plain email": lambda k: [
        (ASSERTION, k.mint(ANN)),
        (PLAIN_EMAIL, "accounts.google.com:" + BOB),
    ],
    "valid token, mismatching plain user id": lambda k: [
        (ASSERTION, k.mint(ANN)),
        (PLAIN_ID, "accounts.google.com:123"),
    ],
    "two assertions": lambda k: [(ASSERTION, k.mint(ANN)), (ASSERTION, k.mint(BOB))],
    "valid token under an underscore spelling": lambda k: [
        ("x_goog_iap_jwt_assertion", k.mint(ANN))
    ],
    "plain email header alone (the old hole)": lambda k: [
        (PLAIN_EMAIL, "accounts.google.com:" + ANN)
    ],
}


@pytest.fixture(scope="module")
def broker(start_broker: Callable[..., Broker], iap_keys: IapKeys) -> Broker:
    return start_broker(
        SDB_AUTH="iap",
        SDB_IAP_AUDIENCE=AUDIENCE,
        SDB_IAP_JWKS_URL=iap_keys.jwks_url,
        SDB_ALLOWED_DOMAINS="example.com",
    )


@pytest.fixture(scope="module")
def db(broker: Broker) -> str:
    """The broker's Redis database, to look at what it recorded."""
    return redis_url(broker)


def _slug(case: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in case)


@pytest.mark.parametrize("transport", ["http", "websocket"])
@pytest.mark.parametrize("case", list(FORGED))
def test_forged_request_is_401_and_never_proxied(
    broker: Broker, iap_keys: IapKeys, db: str, case: str, transport: str
) -> None:
    marker = f"forged={_slug(case)}-{transport}"
    headers = FORGED[case](iap_keys)
    if transport == "http":
        status = request(f"{broker.url}/stub/whoami?{marker}", headers=headers).status
    else:
        status = websocket_status(f"{broker.url}/stub/ws-echo?{marker}", headers=headers)
    assert status == 401
    assert claims_in_redis(db) == []
    assert pod_log_lines(broker.data_dir, marker) == []


def test_valid_assertion_lands_in_own_webui_and_is_not_forwarded(
    broker: Broker, iap_keys: IapKeys
) -> None:
    token = iap_keys.mint(ANN)
    sent = {ASSERTION: token, PLAIN_EMAIL: "accounts.google.com:" + ANN}
    me = request(broker.url + "/stub/whoami?valid-assertion", headers=sent).json()
    assert me["user"] == ANN
    # The control for every "never proxied" check: a request that did get through is logged.
    wait_for(lambda: pod_log_lines(broker.data_dir, "valid-assertion"), 5, what="pod access log")
    seen = request(broker.url + "/stub/echo-headers", headers=sent).json()
    assert not [h for h in seen if h.startswith("x-goog-")], seen
    assert token not in str(seen)
    assert websocket_status(broker.url + "/stub/ws-echo", headers={ASSERTION: token}) == 101


def test_clock_skew_within_leeway_is_accepted(broker: Broker, iap_keys: IapKeys) -> None:
    skewed = iap_keys.mint(ANN, iat=now() + 20, exp=now() + 600)
    assert request(broker.url + "/stub/whoami", headers={ASSERTION: skewed}).status == 200
    just_expired = iap_keys.mint(ANN, iat=now() - 600, exp=now() - 20)
    assert request(broker.url + "/stub/whoami", headers={ASSERTION: just_expired}).status == 200


def test_token_wins_over_a_cookie_of_another_user(
    broker: Broker, iap_keys: IapKeys, db: str
) -> None:
    bob_cookie = Signer(b"test-secret-shared-by-all-brokers").sign(
        "session", {"u": BOB, "e": BOB, "g": []}
    )
    headers = {ASSERTION: iap_keys.mint(ANN), "Cookie": f"sdb_session={bob_cookie}"}
    assert request(broker.url + "/stub/whoami", headers=headers).json()["user"] == ANN
    assert websocket_status(broker.url + "/stub/ws-echo", headers=headers) == 101
    cookie_only = {"Cookie": f"sdb_session={bob_cookie}"}
    assert request(broker.url + "/stub/whoami?cookie-only", headers=cookie_only).status == 401
    assert websocket_status(broker.url + "/stub/ws-echo?cookie-only", headers=cookie_only) == 401
    assert BOB not in claims_in_redis(db)
    assert pod_log_lines(broker.data_dir, "cookie-only") == []


def test_only_healthz_answers_without_a_token(broker: Broker) -> None:
    assert request(broker.url + "/_broker/healthz").status == 200
    for path in ("/", "/_broker/readyz", "/_broker/login", "/_broker/nope", "/_broker/healthz/"):
        assert request(broker.url + path).status == 401, path


def test_unknown_kids_fetch_the_keys_at_most_once_per_30s(
    broker: Broker, iap_keys: IapKeys
) -> None:
    before = iap_keys.hits
    for _ in range(8):
        status = request(
            broker.url + "/stub/whoami", headers={ASSERTION: iap_keys.forge_unknown_kid(ANN)}
        ).status
        assert status == 401
    assert iap_keys.hits - before <= 1


def test_refused_user_gets_403_with_who_and_how_to_log_out(
    broker: Broker, iap_keys: IapKeys, db: str
) -> None:
    """SDB_ALLOWED_DOMAINS narrows IAP's own list; the refused page names the account."""
    eve = "eve@example.com.evil.org"
    page = request(
        broker.url + "/?refused", headers={ASSERTION: iap_keys.mint(eve), "Accept": "text/html"}
    )
    assert page.status == 403
    assert eve in page.text and "/_gcp_iap/clear_login_cookie" in page.text
    api = request(
        broker.url + "/sdapi/v1/progress?refused", headers={ASSERTION: iap_keys.mint(eve)}
    )
    assert api.status == 403 and api.json()["user"] == eve
    ws = websocket_status(
        broker.url + "/stub/ws-echo?refused", headers={ASSERTION: iap_keys.mint(eve)}
    )
    assert ws == 403
    assert eve not in claims_in_redis(db)
    assert pod_log_lines(broker.data_dir, "refused") == []


def test_client_identity_headers_are_dropped(broker: Broker, iap_keys: IapKeys) -> None:
    """Spoofs ride along a valid assertion; the assertion and plain headers IAP sets are
    checked by the forged table instead, so they are not among the spoofs here."""
    assert_spoofs_dropped(
        broker, {ASSERTION: iap_keys.mint(ANN)}, ANN, except_for=(ASSERTION, PLAIN_EMAIL, PLAIN_ID)
    )
