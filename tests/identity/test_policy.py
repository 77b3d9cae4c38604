"""Who gets in, where `next` may lead, and the settings that refuse to start half-configured."""

from __future__ import annotations

import pytest

from broker.cli import load_settings
from broker.identity import Identity
from broker.security.access import AccessPolicy, parse_address
from broker.security.redirects import safe_next

from .helpers import OPEN_REDIRECTS


@pytest.mark.parametrize(
    "address",
    [
        "eve@evil.org@example.com",
        "eve@example.com@evil.org",
        '"eve@evil.org"@example.com',
        "eve @example.com",
        "eve@example.com.",
        "eve@.example.com",
        "eve@example..com",
        "eve@localhost",
        "eve@127.0.0.1",
        "eve@[127.0.0.1]",
        "@example.com",
        "eve@",
        "eve(comment)@example.com",
        "<eve@example.com>",
        "eve@example.com\n",
        "eve@exa mple.com",
        ".eve@example.com",
        "eve@-example.com",
    ],
)
def test_addresses_that_are_not_one_plain_address(address: str) -> None:
    assert parse_address(address) is None
    policy = AccessPolicy(domains=frozenset({"example.com"}))
    assert not policy.allows(Identity(user=address, email=address))


def test_domains_match_exactly_and_case_blind() -> None:
    assert parse_address("Ann.Lee+sd@Example.COM") == ("Ann.Lee+sd", "example.com")
    policy = AccessPolicy(domains=frozenset({"example.com"}))
    for ok in ("ann@example.com", "Ann@EXAMPLE.com"):
        assert policy.allows(Identity(user=ok, email=ok)), ok
    for no in (
        "ann@sub.example.com",
        "ann@notexample.com",
        "ann@example.com.evil.org",
        "ann@example.co",
    ):
        assert not policy.allows(Identity(user=no, email=no)), no


def test_emails_groups_and_the_open_default() -> None:
    assert AccessPolicy().allows(Identity(user="anyone"))
    policy = AccessPolicy(emails=frozenset({"ann@partner.org"}), groups=frozenset({"sd-users"}))
    assert policy.allows(Identity(user="ann@partner.org", email="ANN@partner.org"))
    assert not policy.allows(Identity(user="bob@partner.org", email="bob@partner.org"))
    assert policy.allows(Identity(user="carol", groups=("other", "sd-users")))
    assert not policy.allows(Identity(user="carol", groups=("SD-USERS",)))  # groups are exact


def test_admins_are_marked_and_always_let_in() -> None:
    policy = AccessPolicy(
        domains=frozenset({"example.com"}),
        admin_users=frozenset({"root@ops.example.net", "alice"}),
        admin_groups=frozenset({"sd-admins"}),
    )
    assert policy.admit(
        Identity(user="root@ops.example.net", email="Root@ops.example.net")
    ).is_admin
    assert policy.admit(Identity(user="alice")).is_admin
    assert policy.admit(Identity(user="x@elsewhere.org", groups=("sd-admins",))).is_admin
    plain = policy.admit(Identity(user="ann@example.com", email="ann@example.com", is_admin=True))
    assert plain is not None and not plain.is_admin  # a mode cannot make anyone admin
    assert policy.admit(Identity(user="x@elsewhere.org")) is None


@pytest.mark.parametrize("target", OPEN_REDIRECTS)
def test_next_refuses_every_way_off_the_origin(target: str) -> None:
    assert safe_next(target) == "/"


@pytest.mark.parametrize("target", ["/", "/stub/whoami", "/a/b?c=//d&e=https://f", "/..//x", "/é"])
def test_next_keeps_local_paths(target: str) -> None:
    assert safe_next(target) == target


BASE = {"SDB_HOST": "127.0.0.1", "SDB_COOKIE_SECRET": "x"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SDB_AUTH": "iap"}, "SDB_IAP_AUDIENCE: Value error, is required with SDB_AUTH=iap"),
        ({"SDB_AUTH": "iap", "SDB_IAP_AUDIENCE": "123"}, "SDB_IAP_AUDIENCE"),
        (
            {"SDB_AUTH": "oidc", "SDB_OIDC_CLIENT_ID": "c"},
            "SDB_OIDC_ISSUER: Value error, is required",
        ),
        ({"SDB_AUTH": "oidc", "SDB_OIDC_ISSUER": "https://id.example"}, "SDB_OIDC_CLIENT_ID"),
        (
            {"SDB_AUTH": "oidc", "SDB_OIDC_ISSUER": "http://id.example", "SDB_OIDC_CLIENT_ID": "c"},
            "SDB_OIDC_ISSUER: Value error, must be an https:// URL",
        ),
        (
            {
                "SDB_AUTH": "oidc",
                "SDB_HOST": "0.0.0.0",
                "SDB_OIDC_ISSUER": "https://id.example",
                "SDB_OIDC_CLIENT_ID": "c",
            },
            "SDB_PUBLIC_URL: Value error, is required with SDB_AUTH=oidc",
        ),  # fmt: skip
        ({"SDB_PUBLIC_URL": "https://sd.example.com/app"}, "SDB_PUBLIC_URL"),
        ({"SDB_ALLOWED_EMAILS": "ann@x.org,eve@evil.org@x.org"}, "SDB_ALLOWED_EMAILS"),
        ({"SDB_ALLOWED_DOMAINS": "example.com,https://x.org"}, "SDB_ALLOWED_DOMAINS"),
        ({"SDB_OIDC_SCOPES": "email profile"}, "SDB_OIDC_SCOPES: Value error, must include openid"),
        ({"SDB_IAP_JWKS_URL": "http://keys.example/jwk"}, "SDB_IAP_JWKS_URL"),
    ],
)
def test_settings_refuse_to_start_half_configured(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict, message: str
) -> None:
    for name, value in {**BASE, **env}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exc:
        load_settings()
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_settings_parse_lists_and_normalise(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        **BASE,
        "SDB_AUTH": "oidc",
        "SDB_OIDC_ISSUER": "https://id.example/realms/sd/",
        "SDB_OIDC_CLIENT_ID": "c",
        "SDB_HOST": "0.0.0.0",
        "SDB_PUBLIC_URL": "https://SD.example.com/",
        "SDB_ALLOWED_DOMAINS": "Example.com, @partner.org",
        "SDB_ALLOWED_EMAILS": "Ann@X.org",
        "SDB_ADMIN_GROUPS": "sd-admins,ops",
        "SDB_OIDC_SCOPES": "openid email profile groups",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.oidc_issuer == "https://id.example/realms/sd"
    assert settings.public_url == "https://SD.example.com"
    assert settings.allowed_domains == ["example.com", "partner.org"]
    assert settings.allowed_emails == ["ann@x.org"]
    assert settings.admin_groups == ["sd-admins", "ops"]
    assert settings.oidc_scopes == ["openid", "email", "profile", "groups"]
