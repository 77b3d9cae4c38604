"""Groups are asked of the provider again at every session refresh (SDB_SESSION_REFRESH),
not only at login: someone taken out of the allowed group loses access, an admin taken
out of the admin group loses admin, a person disabled at the provider is logged out.

Before (issue 16) a session kept the groups of its login for SDB_SESSION_TTL (12 h).
The broker runs two workers (SDB_WORKERS=2) with a 60 s session cache, so only a
refresh that reaches every worker explains a prompt change on all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from broker.security.cookies import SESSION_COOKIE
from tests.support.procs import Broker, wait_for

from .helpers import Browser, login, request
from .provider import Provider, oidc_broker

ROUNDS = 16  # each on a new connection: SO_REUSEPORT spreads them over both workers
REFRESH = {"SDB_SESSION_REFRESH": "1s", "SDB_SESSION_CACHE_TTL": "60s", "SDB_WORKERS": "2"}


@pytest.fixture(scope="module")
def broker(start_broker: Callable[..., Broker], provider: Provider) -> Broker:
    return oidc_broker(
        start_broker,
        provider,
        SDB_ALLOWED_GROUPS="sd-users",
        SDB_ADMIN_GROUPS="sd-admins",
        **REFRESH,
    )


@pytest.fixture
def person(provider: Provider) -> Iterator[Callable[..., dict[str, str]]]:
    """Adds a person to the provider, logs them in; returns their session cookie header."""
    added: list[str] = []

    def make(name: str, *groups: str, broker: Broker) -> dict[str, str]:
        provider.add_user(name, f"{name}@partner.org", groups=groups)
        added.append(name)
        browser = Browser()
        assert login(browser, broker, name).status == 302
        return {"Cookie": f"{SESSION_COOKIE}={browser.cookies['127.0.0.1'][SESSION_COOKIE]}"}

    yield make
    for name in added:
        provider.users.pop(name, None)
    provider.issue_refresh_tokens = True
    provider.refresh_id_token = False
    provider.access_ttl = 3600
    provider.tamper = {}
    provider.userinfo_tamper = {}


def statuses(broker: Broker, path: str, cookie: dict[str, str]) -> list[int]:
    return [request(broker.url + path, headers=cookie).status for _ in range(ROUNDS)]


def settles_at(broker: Broker, path: str, cookie: dict[str, str], status: int) -> list[int]:
    """Every worker's answers once one of them gave `status` (a refresh is due after 1 s)."""
    wait_for(lambda: statuses(broker, path, cookie)[-1] == status, 15, interval=0.2,
             what=f"{status} at {path}")  # fmt: skip
    return statuses(broker, path, cookie)


def test_someone_taken_out_of_the_allowed_group_loses_access_at_the_next_refresh(
    broker: Broker, provider: Provider, person: Callable[..., dict[str, str]]
) -> None:
    cookie = person("gina", "sd-users", broker=broker)
    assert not {401, 403} & set(statuses(broker, "/_broker/gallery", cookie))
    provider.users["gina"].groups = ("other",)
    assert settles_at(broker, "/_broker/gallery", cookie, 403) == [403] * ROUNDS
    provider.users["gina"].groups = ("sd-users",)  # and back in at the refresh after
    assert settles_at(broker, "/_broker/gallery", cookie, 200) == [200] * ROUNDS


def test_an_admin_taken_out_of_the_admin_group_loses_admin_but_not_access(
    broker: Broker, provider: Provider, person: Callable[..., dict[str, str]]
) -> None:
    cookie = person("hal", "sd-users", "sd-admins", broker=broker)
    assert statuses(broker, "/_broker/admin", cookie) == [200] * ROUNDS
    provider.users["hal"].groups = ("sd-users",)
    assert settles_at(broker, "/_broker/admin", cookie, 403) == [403] * ROUNDS
    assert statuses(broker, "/_broker/gallery", cookie) == [200] * ROUNDS


def test_someone_disabled_at_the_provider_is_logged_out_at_the_next_refresh(
    broker: Broker, provider: Provider, person: Callable[..., dict[str, str]]
) -> None:
    cookie = person("ivan", "sd-users", broker=broker)
    refreshes = provider.refreshes
    wait_for(lambda: statuses(broker, "/_broker/gallery", cookie) and provider.refreshes > refreshes,
             15, interval=0.2, what="a refresh")  # fmt: skip
    assert statuses(broker, "/_broker/gallery", cookie) == [200] * ROUNDS  # refreshed, kept
    provider.revoke_refresh_tokens("ivan")
    assert settles_at(broker, "/_broker/gallery", cookie, 401) == [401] * ROUNDS


def test_without_refresh_tokens_the_access_token_reads_the_groups_until_it_expires(
    broker: Broker, provider: Provider, person: Callable[..., dict[str, str]]
) -> None:
    provider.issue_refresh_tokens = False  # e.g. Entra ID without offline_access
    cookie = person("judy", "sd-users", broker=broker)
    provider.users["judy"].groups = ()
    assert settles_at(broker, "/_broker/gallery", cookie, 403) == [403] * ROUNDS
    provider.access_ttl = 1  # the next person's token lapses: nothing left to ask with
    short = person("kim", "sd-users", broker=broker)
    asked = provider.userinfo_calls
    provider.users["kim"].groups = ()
    time.sleep(3)  # three refresh intervals: each finds nothing to ask with
    # Kept as it was (not cut off hourly mid-generation), and the provider never asked
    assert statuses(broker, "/_broker/gallery", short) == [200] * ROUNDS
    assert provider.userinfo_calls == asked


def test_a_new_id_token_at_refresh_is_believed_only_about_the_same_person(
    broker: Broker, provider: Provider, person: Callable[..., dict[str, str]]
) -> None:
    """Groups come from the refresh answer's ID token (userinfo, which would say
    someone else, is not asked); one whose `sub` changed ends the session (Core 12.2)."""
    provider.refresh_id_token = True
    cookie = person("lena", "sd-users", broker=broker)
    provider.userinfo_tamper = {"sub": "sub-ann"}  # would end the session if asked
    provider.users["lena"].groups = ()
    assert settles_at(broker, "/_broker/gallery", cookie, 403) == [403] * ROUNDS
    provider.tamper = {"sub": "sub-ann"}
    assert settles_at(broker, "/_broker/gallery", cookie, 401) == [401] * ROUNDS
