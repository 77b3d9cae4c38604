"""Credentials from a kubeconfig's exec plugin, kept fresh for as long as the broker runs.

A broker run outside the cluster (GKE with `gke-gcloud-auth-plugin`, EKS with
`aws eks get-token`) gets a token that lasts about an hour. kubernetes_asyncio
runs the plugin once, in `load_kube_config`, and again only when its caller
asks (config/kube_config.py: `refresh_token` is a loop the caller must run;
`KubeConfigLoader.load_from_exec_plugin` reruns the plugin only when called).
Without this every call is 401 after that hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from typing import Any

from kubernetes_asyncio.client import Configuration

log = logging.getLogger(__name__)
#: Run the plugin this long before its credential expires, so that no request
#: is sent with a token that expires on the way.
EXPIRY_MARGIN = datetime.timedelta(seconds=10)


class ExecCredentials:
    """Refreshes an exec plugin's token the way client-go's exec authenticator does.

    client-go (plugin/pkg/client/auth/exec/exec.go) reruns the plugin before a
    request once the cached credential's `expirationTimestamp` has passed
    (`getCreds` / `credsExpired`; a credential without one is kept) and after
    any 401 (`roundTripper.RoundTrip` -> `maybeRefreshCreds`), one run at a
    time. Installed as the configuration's `refresh_api_key_hook`, which
    kubernetes_asyncio awaits before every request (client/configuration.py,
    `get_api_key_with_prefix`).
    """

    def __init__(self, loader: Any, configuration: Configuration) -> None:
        self.loader = loader  # kubernetes_asyncio's KubeConfigLoader, which runs the plugin
        self.configuration = configuration
        self.runs = 0  # plugin runs after the first (load_kube_config's)
        self._stale = False
        self._lock = asyncio.Lock()

    @classmethod
    def install(cls, loader: Any, configuration: Configuration) -> ExecCredentials | None:
        """Keep the loader's exec credential fresh in `configuration`; None without an exec user."""
        user = getattr(loader, "_user", None)  # as kube_config.refresh_token looks it up
        if user is None or "exec" not in user:
            return None
        credentials = cls(loader, configuration)
        configuration.refresh_api_key_hook = credentials.refresh_hook
        return credentials

    def unauthorized(self) -> None:
        """The API server refused the token (revoked, or expired early): run the plugin again."""
        self._stale = True

    def _due(self) -> bool:
        if self._stale:
            return True
        expiry = getattr(self.loader, "exec_plugin_expiry", None)
        now = datetime.datetime.now(datetime.UTC)
        return expiry is not None and now >= expiry - EXPIRY_MARGIN

    async def refresh_hook(self, configuration: Configuration) -> None:
        if not self._due():
            return
        async with self._lock:
            if not self._due():  # another request ran it while this one waited
                return
            # load_from_exec_plugin keeps a credential until 5 minutes before its
            # expiry and knows nothing of 401s: make it run the plugin now.
            with contextlib.suppress(AttributeError):
                del self.loader.exec_plugin_expiry
            await self.loader.load_from_exec_plugin()  # raises ConfigException if the plugin fails
            self.runs += 1
            self._stale = False
            configuration.api_key["BearerToken"] = self.loader.token
            log.info(
                "Kubernetes credentials refreshed by the exec plugin (expire %s)",
                getattr(self.loader, "exec_plugin_expiry", "never"),
            )
