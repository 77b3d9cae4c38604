"""Short-lived bearer tokens, as a cloud's kubectl exec plugin hands them out.

`gke-gcloud-auth-plugin` (and `aws eks get-token`) print an ExecCredential
whose token the API server accepts until its `expirationTimestamp` (about an
hour), then answers 401. `execplugin.py` is such a plugin for the simulator:
it asks `POST /_sim/issue_token` for a token of the given lifetime. Expiry is
wall-clock time, as it is for the client that reads the timestamp.
"""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path
from typing import Any

from .clock import rfc3339

PLUGIN = Path(__file__).with_name("execplugin.py")
API_VERSION = "client.authentication.k8s.io/v1"


class TokenIssuer:
    def __init__(self) -> None:
        self.tokens: dict[str, float] = {}  # token -> expiry (unix seconds)
        self.issued = 0

    def issue(self, ttl: float) -> dict[str, Any]:
        """A new token, valid `ttl` seconds: the ExecCredential status a plugin prints."""
        token = secrets.token_urlsafe(24)
        expiry = time.time() + ttl
        self.tokens[token] = expiry
        self.issued += 1
        return {"token": token, "expirationTimestamp": rfc3339(expiry)}

    def accepts(self, authorization: str | None) -> bool:
        token = (authorization or "").removeprefix("Bearer ")
        return time.time() < self.tokens.get(token, 0.0)


def exec_user(url: str, ttl: float) -> dict[str, Any]:
    """The kubeconfig `user` that runs execplugin.py against the simulator at `url`."""
    return {
        "exec": {
            "apiVersion": API_VERSION,
            "command": sys.executable,
            # -I: not the plugin's folder first on sys.path, whose http.py would shadow the stdlib's
            "args": ["-I", str(PLUGIN), url, str(ttl)],
            "interactiveMode": "Never",
        }
    }
