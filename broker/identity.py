"""Who a request is from, and the client-sent headers that could lie about it.

Before anything reads a request, every identity header a client sent is
dropped, whatever its case and whether it is spelt with `-` or `_`: a WebUI or
a browser must never be able to claim to be someone else.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field

from multidict import CIMultiDict, CIMultiDictProxy

#: Exact names (normalised: lower case, `_` read as `-`).
IDENTITY_HEADERS = frozenset(
    {
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-preferred-username",
        "x-forwarded-groups",
        "x-forwarded-access-token",
        "x-remote-user",
        "x-remote-email",
        "x-remote-group",
        "remote-user",
        "x-user",
        "x-email",
        "x-webauth-user",
        "x-sdbroker-user",
    }
)
#: Any header starting with one of these.
IDENTITY_PREFIXES = ("x-auth-request-", "x-goog-authenticated-", "x-goog-iap-", "x-sdbroker-")


def normalise(name: str) -> str:
    return name.lower().replace("_", "-")


@functools.lru_cache(maxsize=4096)
def is_identity_header(name: str, extra: frozenset[str] = frozenset()) -> bool:
    """Memoised: the same few header names come with every request (and a client
    sending many odd names only cycles this bounded cache)."""
    n = normalise(name)
    return n in IDENTITY_HEADERS or n in extra or n.startswith(IDENTITY_PREFIXES)


@functools.lru_cache(maxsize=64)
def normalised(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(normalise(n) for n in names)


def without_identity_headers(
    headers: CIMultiDictProxy[str], *, extra: Iterable[str] = (), keep: Iterable[str] = ()
) -> CIMultiDict[str] | None:
    """A copy without identity headers, or None when there were none (the common case).

    A kept header is kept only in its exact spelling (any case): `X_Forwarded_User`
    still goes when `X-Forwarded-User` is kept, or it could ride along to a pod
    whose framework reads `_` as `-`.
    """
    extra_n = normalised(tuple(extra))
    keep_n = frozenset(k.lower() for k in keep)
    if not any(is_identity_header(k, extra_n) and k.lower() not in keep_n for k in headers):
        return None
    return CIMultiDict(
        (k, v)
        for k, v in headers.items()
        if not is_identity_header(k, extra_n) or k.lower() in keep_n
    )


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    email: str = ""
    groups: tuple[str, ...] = field(default_factory=tuple)
    is_admin: bool = False
    #: The provider's stable subject id (iap, oidc), when there is one.
    sub: str = ""
