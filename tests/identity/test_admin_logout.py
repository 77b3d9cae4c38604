"""An admin ends a person's logins from the console or the API: at once, on every worker.

docs/identity.md promised it; nothing called SessionStore.revoke_user before.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.support.procs import Broker, wait_for

from .helpers import Browser, form_field, login, request
from .provider import Provider, oidc_broker

CAROL = "carol@partner.org"


def _cookie(browser: Browser) -> dict[str, str]:
    return {"Cookie": "sdb_session=" + browser.cookies["127.0.0.1"]["sdb_session"]}


def _logged_in(broker: Broker, browser: Browser) -> bool:
    return request(broker.url + "/stub/whoami", headers=_cookie(browser)).status != 401


def _logged_out(broker: Broker, browser: Browser) -> bool:
    """Within a second (the cache lives a minute): the revocation reached every worker."""
    wait_for(lambda: not _logged_in(broker, browser), 1, interval=0.02, what="logged out")
    return not any(_logged_in(broker, browser) for _ in range(8))


def test_an_admin_logs_a_person_out_from_the_console_and_the_api(
    start_broker: Callable[..., Broker], provider: Provider
) -> None:
    broker = oidc_broker(
        start_broker,
        provider,
        SDB_SESSION_CACHE_TTL="60s",
        SDB_ADMIN_USERS="ann@example.com",
        SDB_WORKERS="2",
    )
    admin, laptop, phone = Browser(), Browser(), Browser()
    for browser, name in ((admin, "ann"), (laptop, "carol"), (phone, "carol")):
        login(browser, broker, name)
    assert _logged_in(broker, laptop) and _logged_in(broker, phone)

    console = admin.get(broker.url + "/_broker/admin")
    assert console.status == 200 and 'action="/_broker/admin/logout"' in console.text
    done = admin.post(
        broker.url + "/_broker/admin/logout",
        {"csrf_token": form_field(console.text, "csrf_token"), "user": CAROL},
    )
    assert done.status == 303
    assert _logged_out(broker, laptop) and _logged_out(broker, phone)
    assert _logged_in(broker, admin)  # only carol's logins ended

    login(laptop, broker, "carol")  # she logs in again; then the API ends it
    assert _logged_in(broker, laptop)
    console = admin.get(broker.url + "/_broker/admin")
    page = admin.post(
        broker.url + "/_broker/admin/tokens",
        {"csrf_token": form_field(console.text, "csrf_token"), "name": "ops"},
    )
    token = re.search(r'<code id="new-token">([^<]+)</code>', page.text)[1]
    bearer = {"Authorization": f"Bearer {token}"}
    answer = request(broker.url + f"/_broker/api/v1/sessions/{CAROL}/logout", method="POST",
                     headers=bearer)  # fmt: skip
    assert answer.status == 200 and answer.json()["ok"] is True, answer.text
    assert _logged_out(broker, laptop)
    again = request(broker.url + f"/_broker/api/v1/sessions/{CAROL}/logout", method="POST",
                    headers=bearer)  # fmt: skip
    assert again.status == 404 and "has no login" in again.json()["detail"]
