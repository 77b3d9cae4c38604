"""Signed, timestamped tokens for cookies (HMAC-SHA256 over a JSON payload).

The signature covers a purpose string, so a CSRF token can never be replayed
as a session cookie or the other way round.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"sdbroker-signing:" + secret).digest()

    def _mac(self, purpose: str, body: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}.{body}".encode(), hashlib.sha256).digest())

    def sign(self, purpose: str, payload: dict[str, Any], *, now: float | None = None) -> str:
        body = _b64(
            json.dumps({**payload, "t": int(now if now is not None else time.time())}).encode()
        )
        return f"{body}.{self._mac(purpose, body)}"

    def verify(
        self, purpose: str, token: str | None, *, max_age: float, now: float | None = None
    ) -> dict[str, Any] | None:
        """The payload, or None for anything missing, forged, malformed or expired."""
        if not token or len(token) > 4096 or token.count(".") != 1:
            return None
        body, mac = token.split(".")
        if not hmac.compare_digest(mac, self._mac(purpose, body)):
            return None
        try:
            payload = json.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("t"), int):
            return None
        age = (now if now is not None else time.time()) - payload["t"]
        if age > max_age or age < -60:
            return None
        return payload
