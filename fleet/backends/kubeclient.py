"""The Kubernetes API client for the kubernetes and agones backends, and its errors.

Clients come from the pod's service account in a cluster, else from
KUBECONFIG (or ~/.kube/config). Every request has a deadline and runs on a
keepalive connection (kuberest), exec-plugin credentials are refreshed
(kubeauth). API errors are translated into the fleet's own hierarchy, raised
`from` the original, with bodies cut short for logs; `call` retries what the
API server refused only for now.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import ConfigException
from kubernetes_asyncio.config.kube_config import (
    KUBE_CONFIG_DEFAULT_LOCATION,
    KubeConfigLoader,
    KubeConfigMerger,
)

from ..errors import BackendError, Conflict, PodGone, Unavailable
from .kubeauth import ExecCredentials
from .kuberest import KubeRest

log = logging.getLogger(__name__)
BODY_LIMIT = 300
RETRY_ATTEMPTS = 4  # tries of one call the API server refused for now (429, 5xx) or never answered
RETRY_WAIT_MAX = 5.0  # seconds: a longer Retry-After is cut to this (somebody's claim waits)
RETRY_BUDGET = 10.0  # seconds of waiting between the tries of one call, at most
RETRY_FIRST = 0.2  # seconds before the second try when the server named no Retry-After


async def api_client() -> client.ApiClient:
    cfg = client.Configuration()
    credentials = None
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        # Its refresh hook rereads the projected service-account token (which the
        # kubelet rotates) every minute (incluster_config.py, InClusterConfigLoader._set_config).
        config.load_incluster_config(client_configuration=cfg)
    else:
        loader = await asyncio.to_thread(kube_config_loader, os.environ.get("KUBECONFIG"))
        await loader.load_and_set(cfg)
        credentials = ExecCredentials.install(loader, cfg)
    api = client.ApiClient(cfg)
    await api.rest_client.close()  # the default one, never used: no deadline, no keepalive
    api.rest_client = KubeRest(cfg, credentials.unauthorized if credentials else None)
    return api


def kube_config_loader(path: str | None) -> KubeConfigLoader:
    """KUBECONFIG (or ~/.kube/config) read and parsed, in a thread: file reads. What
    kubernetes_asyncio 36.1.0 `load_kube_config` does in the event loop before its
    `load_and_set` (config/kube_config.py, `_get_kube_config_loader_for_yaml_file`)."""
    merged = KubeConfigMerger(path or KUBE_CONFIG_DEFAULT_LOCATION)
    return KubeConfigLoader(
        config_dict=merged.config, config_base_path=None, config_persister=merged.save_changes
    )


def message_of(exc: ApiException) -> str:
    """The Status message of an API error (or its body, or its reason), cut short."""
    body = exc.body.decode() if isinstance(exc.body, bytes) else str(exc.body or "")
    try:
        return str(json.loads(body).get("message") or exc.reason)[:BODY_LIMIT]
    except (ValueError, AttributeError):
        return (body or str(exc.reason))[:BODY_LIMIT]


def retry_after(exc: ApiException) -> float | None:
    """The Retry-After of a 429 or 5xx in seconds, as client-go reads it (rest/request.go,
    `checkWait` / `retryAfterSeconds`: whole seconds only)."""
    if exc.status != 429 and not (exc.status or 0) >= 500:
        return None
    value = exc.headers.get("Retry-After") if exc.headers is not None else None
    try:
        return max(0.0, float(int(value))) if value is not None else None
    except ValueError:
        return None


@contextlib.contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Run a Kubernetes call; its failures become Conflict, PodGone, Unavailable or BackendError."""
    try:
        yield
    except ApiException as exc:
        status = exc.status or 0
        if status == 409:
            raise Conflict(f"{what}: conflict: {message_of(exc)}") from exc
        if status == 404:
            raise PodGone(f"{what}: not found") from exc
        if status == 429 or status >= 500:
            raise Unavailable(
                f"{what}: HTTP {status}: {message_of(exc)}", retry_after(exc)
            ) from exc
        raise BackendError(f"{what}: HTTP {status} {exc.reason}: {message_of(exc)}") from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        why = str(exc) or type(exc).__name__  # a timeout has no message of its own
        raise Unavailable(f"{what}: Kubernetes API unreachable: {why}") from exc
    except ConfigException as exc:  # the exec plugin failed to give credentials
        raise BackendError(f"{what}: no Kubernetes credentials: {exc}") from exc


async def read_json(response: Any) -> dict[str, Any]:
    """The body of a call made with _preload_content=False.

    kubernetes_asyncio raises ApiException for an error status only when it
    preloads the body; here we must, or a 409/500 would read as a success.
    """
    try:
        data = await response.read()
        if not 200 <= response.status <= 299:
            raise error_of(response, data)
        return json.loads(data)
    finally:
        response.release()


def error_of(response: Any, data: bytes) -> ApiException:
    """The ApiException kubernetes_asyncio would raise for this answer, headers included."""
    exc = ApiException(status=response.status, reason=response.reason)
    exc.body = data
    exc.headers = response.headers
    return exc


async def call(what: str, request: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    """The JSON answer of one API call made with _preload_content=False, retried while the
    API server refuses it only for now.

    429 and 5xx are retried after the server's Retry-After (client-go retries
    those and honours it: rest/with_retry.go, `IsNextRetry`), else after a
    doubling pause; so is a call that got no answer at all. Every write we make
    is safe to repeat: creates name their object (a repeat is 409), patches of
    a claim carry a resourceVersion precondition. The whole wait is bounded
    (RETRY_BUDGET); then Unavailable says the API, not the pod, is in trouble.
    """
    waited = 0.0
    attempt = 0
    while True:
        try:
            with api_errors(what):
                return await read_json(await request())
        except Unavailable as exc:
            pause = exc.retry_after if exc.retry_after is not None else RETRY_FIRST * 2**attempt
            pause = min(pause, RETRY_WAIT_MAX)
            attempt += 1
            if attempt >= RETRY_ATTEMPTS or waited + pause > RETRY_BUDGET:
                raise
            log.info("%s; retrying in %.1fs", exc, pause)
            await asyncio.sleep(pause)
            waited += pause
