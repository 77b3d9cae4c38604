"""IAP as the tests play it: local ES256 keys served as a JWKS on loopback, and tokens.

`mint` makes what IAP would send; the `forge_*` helpers make what an attacker
inside the network could send instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey, Key, RSAKey

from .servers import ThreadedServer

AUDIENCE = "/projects/123456789012/global/backendServices/1234567890123456789"
ISSUER = "https://cloud.google.com/iap"
KID = "iap-test-1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_for(who: str, **overrides: Any) -> dict[str, Any]:
    """IAP's claims for `who`; an override of None removes that claim."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "accounts.google.com:" + hashlib.sha256(who.encode()).hexdigest()[:20],
        "email": who,
        "iat": now,
        "exp": now + 600,
        "hd": who.split("@")[-1],
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


class IapKeys:
    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256", private=True)
        self.hits = 0
        app = web.Application()
        app.router.add_get("/iap/verify/public_key-jwk", self.jwks)
        self.http = ThreadedServer(app)

    @property
    def jwks_url(self) -> str:
        return self.http.url + "/iap/verify/public_key-jwk"

    def start(self) -> IapKeys:
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.stop()

    async def jwks(self, request: web.Request) -> web.Response:
        self.hits += 1
        public = {**self.key.as_dict(private=False), "kid": KID, "alg": "ES256", "use": "sig"}
        return web.json_response({"keys": [public]})

    def mint(self, who: str, *, key: Key | None = None, alg: str = "ES256",
             kid: str | None = KID, **claims: Any) -> str:  # fmt: skip
        header = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid is not None else {})}
        return jwt.encode(header, claims_for(who, **claims), key or self.key, algorithms=[alg])

    # What an attacker without IAP's private key can make.

    def forge_alg_none(self, email: str) -> str:
        header = {"alg": "none", "typ": "JWT", "kid": KID}
        body = json.dumps(claims_for(email)).encode()
        return f"{_b64(json.dumps(header).encode())}.{_b64(body)}."

    def forge_hs256_with_public_key(self, email: str) -> str:
        """The classic confusion: HMAC keyed with the verifier's public key (PEM and JWK JSON)."""
        secret = self.key.as_pem(private=False)
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KID}).encode())
        body = _b64(json.dumps(claims_for(email)).encode())
        mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
        return f"{header}.{body}.{_b64(mac)}"

    def forge_rs256(self, email: str) -> str:
        return self.mint(email, key=RSAKey.generate_key(2048, private=True), alg="RS256")

    def forge_unknown_kid(self, email: str) -> str:
        return self.mint(email, key=ECKey.generate_key("P-256", private=True), kid="rogue-kid")

    def forge_known_kid_other_key(self, email: str) -> str:
        return self.mint(email, key=ECKey.generate_key("P-256", private=True))

    def forge_swapped_payload(self, email: str, victim: str) -> str:
        """A genuine token for `email` with its payload replaced by the victim's."""
        header, _, sig = self.mint(email).split(".")
        return f"{header}.{_b64(json.dumps(claims_for(victim)).encode())}.{sig}"
