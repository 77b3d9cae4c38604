"""The Kubernetes API client for the kubernetes and agones backends, and its errors.

Clients come from the pod's service account in a cluster, else from
KUBECONFIG (or ~/.kube/config). API errors are translated into the fleet's
own hierarchy, raised `from` the original, with bodies cut short for logs.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from ..errors import BackendError, Conflict, PodGone

BODY_LIMIT = 300


async def api_client() -> client.ApiClient:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        await config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    return client.ApiClient()


def _message(exc: ApiException) -> str:
    body = exc.body.decode() if isinstance(exc.body, bytes) else str(exc.body or "")
    try:
        return str(json.loads(body).get("message") or exc.reason)[:BODY_LIMIT]
    except ValueError:
        return (body or str(exc.reason))[:BODY_LIMIT]


@contextlib.contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Run a Kubernetes call; its failures become Conflict, PodGone or BackendError."""
    try:
        yield
    except ApiException as exc:
        if exc.status == 409:
            raise Conflict(f"{what}: conflict: {_message(exc)}") from exc
        if exc.status == 404:
            raise PodGone(f"{what}: not found") from exc
        raise BackendError(f"{what}: HTTP {exc.status}: {_message(exc)}") from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise BackendError(f"{what}: Kubernetes API unreachable: {exc}") from exc


async def read_json(response: Any) -> dict[str, Any]:
    """The body of a call made with _preload_content=False.

    kubernetes_asyncio raises ApiException for an error status only when it
    preloads the body; here we must, or a 409/500 would read as a success.
    """
    try:
        data = await response.read()
        if not 200 <= response.status <= 299:
            exc = ApiException(status=response.status, reason=response.reason)
            exc.body = data
            exc.headers = response.headers
            raise exc
        return json.loads(data)
    finally:
        response.release()
