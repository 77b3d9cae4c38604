"""Signed tokens checked against a provider's published keys (IAP and OIDC share this).

Keys are fetched once and kept for SDB_JWKS_CACHE_TTL. A token naming a key id
we do not know triggers one fetch, at most every 30 s whatever the number of
such tokens: providers rotate keys (so a new kid must work within seconds),
but a forger must not be able to make us hammer the key endpoint. A failed
fetch keeps the keys we had.

`verify` reads the header before any key is chosen and accepts only the
algorithms it was given: `none`, HMAC with a public key as the secret, or an
RSA token where an EC key is expected all fail there, before joserfc
checks the signature against the one key the kid names.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

import aiohttp
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, Key, OKPKey, RSAKey

log = logging.getLogger(__name__)

REFETCH_INTERVAL = 30.0  # at most one fetch per this many seconds on an unknown kid
LEEWAY = 30  # seconds of clock skew allowed on exp, iat and nbf
MAX_TOKEN = 16 * 1024
FETCH_TIMEOUT = aiohttp.ClientTimeout(total=10)
#: Which key type each asymmetric algorithm needs; symmetric ones are never accepted.
KEY_TYPES: dict[str, type[Key]] = {
    **dict.fromkeys(("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"), RSAKey),
    **dict.fromkeys(("ES256", "ES384", "ES512"), ECKey),
    "EdDSA": OKPKey,
}
CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


class TokenRejected(Exception):
    """A token that does not prove who it claims; the reason is for logs, not for clients."""


class JWKSCache:
    def __init__(
        self,
        url: str | None,
        *,
        ttl: float,
        refetch_interval: float = REFETCH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.refetch_interval = refetch_interval
        self.clock = clock
        self.fetches = 0
        self._keys: dict[str, Key] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def _stale(self) -> bool:
        return self._fetched_at is None or self.clock() - self._fetched_at >= self.ttl

    def _may_refetch(self) -> bool:
        return self._fetched_at is None or self.clock() - self._fetched_at >= self.refetch_interval

    async def refresh(self, http: aiohttp.ClientSession) -> None:
        """Fetch the key set now; on failure keep what we had (and wait before trying again)."""
        if not self.url:
            return
        self.fetches += 1
        self._fetched_at = self.clock()
        try:
            async with http.get(
                self.url, headers={"Accept": "application/json"}, timeout=FETCH_TIMEOUT
            ) as resp:
                resp.raise_for_status()
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("could not fetch keys from %s: %s", self.url, exc)
            return
        keys = parse_jwks(data)
        if not keys:
            log.warning("no usable keys at %s; keeping the %d we had", self.url, len(self._keys))
            return
        self._keys = keys

    async def key(self, http: aiohttp.ClientSession, kid: str | None) -> Key | None:
        """The key with this id (None: the only key, if there is exactly one), fetching if due."""
        async with self._lock:
            if self._stale():
                await self.refresh(http)
            found = self._find(kid)
            if found is None and self._may_refetch():
                await self.refresh(http)
                found = self._find(kid)
            return found

    def _find(self, kid: str | None) -> Key | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)


def parse_jwks(data: Any) -> dict[str, Key]:
    """kid -> public key for every usable signing key; bad entries are skipped, not fatal."""
    keys: dict[str, Key] = {}
    entries = data.get("keys") if isinstance(data, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        try:
            key = JWKRegistry.import_key(
                {k: v for k, v in entry.items() if k not in ("d", "p", "q")}
            )
        except (JoseError, ValueError, TypeError) as exc:
            log.warning("skipping a key of the key set: %s", exc)
            continue
        keys[str(entry.get("kid") or key.thumbprint())] = key
    return keys


def peek_header(token: str) -> dict[str, Any]:
    """The protected header, unverified: only to choose the algorithm and key."""
    if not token or len(token) > MAX_TOKEN or token.count(".") != 2:
        raise TokenRejected("not a compact JWS")
    try:
        header = jws.extract_compact(token.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeError) as exc:
        raise TokenRejected(f"malformed: {exc}") from None
    return dict(header)


async def verify(
    token: str,
    keys: JWKSCache,
    http: aiohttp.ClientSession,
    *,
    algorithms: Collection[str],
    claims: dict[str, Any],
    require_kid: bool = True,
    now: Callable[[], int] | None = None,
) -> dict[str, Any]:
    """The verified claims, or TokenRejected. `claims` are joserfc claim options."""
    header = peek_header(token)
    alg = header.get("alg")
    if alg not in algorithms or alg not in KEY_TYPES:
        raise TokenRejected(f"algorithm {alg!r} not accepted")
    if header.get("crit"):
        raise TokenRejected("critical header extensions are not supported")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenRejected("kid is not a string")
    if kid is None and require_kid:
        raise TokenRejected("no kid")
    key = await keys.key(http, kid)
    if key is None:
        raise TokenRejected(f"unknown kid {kid!r}")
    if not isinstance(key, KEY_TYPES[alg]) or (
        alg in CURVES and key.as_dict().get("crv") != CURVES[alg]
    ):
        raise TokenRejected(f"key {kid!r} does not fit {alg}")
    try:
        decoded = jwt.decode(token, key, algorithms=[alg])
        jwt.JWTClaimsRegistry(now=now, leeway=LEEWAY, **claims).validate(decoded.claims)
    except (JoseError, ValueError, TypeError) as exc:
        raise TokenRejected(f"{type(exc).__name__}: {exc}") from None
    return dict(decoded.claims)


def essential(value: Any = None) -> dict[str, Any]:
    """A joserfc claim option: must be present (and equal `value` when given)."""
    return {"essential": True} if value is None else {"essential": True, "value": value}
