"""The REST routes: discovery, CRUD, patch, subresources and injected API errors."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import discovery, errors
from .agones_schema import SchemaChecks, SchemaViolation
from .credentials import TokenIssuer
from .faults import Faults
from .fleets import scale_of
from .patch import APPLY, JSON_PATCH, MERGE, STRATEGIC, json_patch, merge_patch
from .resources import FLEETS, GAMESERVERALLOCATIONS, PODS, Resource, by_path
from .selectors import FieldSelector, LabelSelector
from .store import Obj, Store, check_preconditions
from .watches import WatchStreamer

Creator = Callable[[str | None, Obj], Obj]
Deleter = Callable[[str | None, str, int | None, dict[str, Any] | None], Obj]
Admin = Callable[[str, dict[str, Any]], Awaitable[Any]]
_VERBS = {
    ("GET", True): "get",
    ("PUT", True): "update",
    ("PATCH", True): "patch",
    ("DELETE", True): "delete",
    ("POST", False): "create",
    ("DELETE", False): "deletecollection",
}


@dataclass
class Hooks:
    """Where a resource's create/delete does more than store the object (pods, Agones)."""

    create: dict[Resource, Creator] = field(default_factory=dict)
    delete: dict[Resource, Deleter] = field(default_factory=dict)
    validate: dict[Resource, Callable[[Obj], None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    res: Resource
    namespace: str | None
    name: str | None
    sub: str | None
    verb: str


class ApiServer:
    def __init__(
        self,
        store: Store,
        faults: Faults,
        hooks: Hooks,
        watches: WatchStreamer,
        *,
        token: str | None,
        anonymous: bool = False,
        admin: Admin | None = None,
        credentials: TokenIssuer | None = None,
        schemas: SchemaChecks | None = None,
    ) -> None:
        self.store, self.faults, self.hooks, self.watches = store, faults, hooks, watches
        self.schemas = schemas or SchemaChecks()  # the Agones kinds against Agones' schemas
        self.token, self.anonymous, self.admin = token, anonymous, admin
        self.credentials = credentials  # exec-plugin tokens, each valid until it expires
        self.requests: dict[str, int] = {}  # "verb resource" -> count, for tests and benchmarks

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except errors.ApiError as err:
            return error_response(err)
        except errors.DropResponse:
            if request.transport is not None:
                request.transport.abort()  # the client sees the connection close, no response
            return web.Response(status=500)
        except (ValueError, UnicodeDecodeError) as err:
            return error_response(errors.bad_request(f"invalid request body: {err}"))
        except SchemaViolation as err:  # the simulator's own bug, recorded for the test to fail
            return error_response(errors.ApiError(500, str(err)))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path.startswith("/_sim/"):
            return await self._admin(request, path.removeprefix("/_sim/"))
        auth = request.headers.get("Authorization")
        if (
            self.token
            and auth != f"Bearer {self.token}"
            and not (auth is None and self.anonymous)
            and not (self.credentials and self.credentials.accepts(auth))
        ):
            raise errors.ApiError(401, "Unauthorized")
        if path == "/version":
            return web.json_response(discovery.VERSION)
        segs = [s for s in path.split("/") if s]
        if segs == ["api"]:
            return web.json_response(discovery.api_versions(request.host))
        if segs == ["apis"]:
            return web.json_response(discovery.api_group_list())
        if len(segs) == 2 and segs[0] == "apis" and (group := discovery.api_group(segs[1])):
            return web.json_response(group)
        target = self._route(request, segs)
        if isinstance(target, dict):
            return web.json_response(target)
        key = f"{target.verb} {target.res.plural}" + (f"/{target.sub}" if target.sub else "")
        self.requests[key] = self.requests.get(key, 0) + 1
        rule = self.faults.take_api_error(
            target.verb, target.res.plural, target.namespace, target.name, path
        )
        if rule is not None:
            err = rule.error(target.res.plural, target.res.group, target.name)
            if target.verb == "watch" and rule.status == 410:
                return await self.watches.error(request, err)
            raise err
        if target.verb not in target.res.verbs:
            raise errors.ApiError(
                405, "the server does not allow this method on the requested resource"
            )
        return await self._serve(request, target)

    def _route(self, request: web.Request, segs: list[str]) -> Target | dict[str, Any]:
        unknown = errors.ApiError(404, "the server could not find the requested resource")
        if segs and segs[0] == "api" and len(segs) >= 2:
            group, version, rest = "", segs[1], segs[2:]
        elif segs and segs[0] == "apis" and len(segs) >= 3:
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise unknown
        if not rest:
            listing = discovery.resource_list(group, version)
            if listing is None:
                raise unknown
            return listing
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            inner = by_path(group, version, rest[2])
            if inner is not None and inner.namespaced:
                ns, rest = rest[1], rest[2:]
        res = by_path(group, version, rest[0])
        if res is None or len(rest) > 3 or (res.namespaced and ns is None and len(rest) > 1):
            raise unknown
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub and not (
            (sub == "status" and res.status_subresource)
            or (sub == "scale" and res.scale_subresource)
        ):
            raise unknown
        if request.method == "GET" and name is None:
            verb = "watch" if flag(request.query.get("watch")) else "list"
        else:
            verb = _VERBS.get((request.method, name is not None), "")
            if not verb:
                raise errors.ApiError(
                    405, "the server does not allow this method on the requested resource"
                )
        return Target(res, ns, name, sub, verb)

    async def _serve(self, request: web.Request, t: Target) -> web.StreamResponse:
        res, ns, name = t.res, t.namespace, t.name
        if t.verb == "watch":
            return await self.watches.serve(request, res, ns)
        if t.verb == "list":
            return web.json_response(self._list(res, ns, request))
        if t.verb == "create":
            body = await _json(request)
            self.schemas.refuse(res, body)
            if res in self.hooks.validate:
                self.hooks.validate[res](body)
            creator = self.hooks.create.get(res)
            obj = creator(ns, body) if creator else self.store.create(res, ns, body)
            if res is GAMESERVERALLOCATIONS:  # answered, never stored
                self.schemas.answered(res, obj)
            return web.json_response(obj, status=201)
        assert name is not None
        if t.verb == "delete":
            return web.json_response(await self._delete(request, res, ns, name))
        if t.verb == "deletecollection":
            items, rv = self.store.list(res, ns, *_selectors(res, request))
            deleted = [self._delete_one(res, ns, o["metadata"]["name"], None, None) for o in items]
            return web.json_response(_list_body(res, deleted, rv))
        current = self.store.get(res, ns, name)
        if t.sub == "scale":
            current = scale_of(current)
        if t.verb == "get":
            return web.json_response(current)
        body = await _json(request)
        if t.verb == "update":
            rv = (
                (body.get("metadata") or {}).get("resourceVersion")
                if isinstance(body, dict)
                else None
            )
            if not rv:
                raise errors.invalid(
                    res.kind,
                    name,
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                    res.group,
                )
            new = body
        else:
            new = self._patched(request, res, current, body)
        new_rv = (new.get("metadata") or {}).get("resourceVersion")
        if new_rv and new_rv != current["metadata"]["resourceVersion"]:
            raise errors.conflict(res.plural, res.group, name)
        if t.sub == "scale":
            return web.json_response(self._scale(ns, name, new))
        return web.json_response(self._write(res, ns, name, t.sub, current, new))

    def _scale(self, ns: str | None, name: str, new: Obj) -> Obj:
        """A write of a Fleet's scale subresource: its replicas, as the API server checks them."""
        replicas = (new.get("spec") or {}).get("replicas") or 0
        if type(replicas) is not int:  # autoscaling/v1 Scale decodes into an int32
            raise errors.bad_request(
                f"json: cannot unmarshal {type(replicas).__name__} into Go struct field "
                "ScaleSpec.spec.replicas of type int32"
            )
        if replicas < 0:  # k8s.io/kubernetes pkg/apis/autoscaling/validation ValidateScale
            raise errors.invalid(
                "Scale",
                name,
                f"spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0",
                "autoscaling",
            )
        fleet = self.store.mutate(
            FLEETS, ns, name, lambda o: o["spec"].__setitem__("replicas", replicas)
        )
        return scale_of(fleet or {})

    def _patched(self, request: web.Request, res: Resource, current: Obj, body: Any) -> Obj:
        ctype = request.content_type
        if ctype == JSON_PATCH:
            return json_patch(current, body)
        if ctype == STRATEGIC and res.group:
            raise errors.ApiError(
                415,
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            )
        if ctype in (MERGE, STRATEGIC):
            if not isinstance(body, dict):
                raise errors.bad_request(
                    "json: cannot unmarshal array into Go value of type map[string]interface {}"
                )
            return merge_patch(current, body)
        accepted = [JSON_PATCH, MERGE] + ([] if res.group else [STRATEGIC]) + [APPLY]
        raise errors.ApiError(
            415,
            "the body of the request was in an unknown format - accepted media types include: "
            + ", ".join(accepted),
        )

    def _write(
        self, res: Resource, ns: str | None, name: str, sub: str | None, current: Obj, new: Obj
    ) -> Obj:
        if sub == "status":
            new = {**current, "status": new.get("status")}
        elif res.status_subresource:
            new = {**new, "status": current.get("status")}
            if new["status"] is None:
                new.pop("status")
        meta, old_meta = new.setdefault("metadata", {}), current["metadata"]
        for managed in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            if managed in old_meta:
                meta[managed] = old_meta[managed]
            else:
                meta.pop(managed, None)
        if res is PODS and sub != "status":
            _check_pod_update(current, new)
        self.schemas.refuse(res, new)
        if res in self.hooks.validate:
            self.hooks.validate[res](new)
        return self.store.update(res, ns, name, new)

    async def _delete(self, request: web.Request, res: Resource, ns: str | None, name: str) -> Obj:
        options: dict[str, Any] = {}
        if request.can_read_body:
            raw = await request.read()
            options = json.loads(raw) if raw.strip() else {}
        grace = request.query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        return self._delete_one(
            res, ns, name, None if grace is None else int(grace), options.get("preconditions")
        )

    def _delete_one(
        self,
        res: Resource,
        ns: str | None,
        name: str,
        grace: int | None,
        pre: dict[str, Any] | None,
    ) -> Obj:
        deleter = self.hooks.delete.get(res)
        if deleter:
            return deleter(ns, name, grace, pre)
        if pre:
            check_preconditions(self.store.get(res, ns, name), pre, res.plural, res.group)
        return self.store.remove(res, ns, name)

    def _list(self, res: Resource, ns: str | None, request: web.Request) -> dict[str, Any]:
        items, rv = self.store.list(res, ns, *_selectors(res, request))
        limit = int(request.query.get("limit") or 0)
        start = 0
        if token := request.query.get("continue"):
            try:
                start = int(json.loads(base64.urlsafe_b64decode(token))["start"])
            except (ValueError, KeyError) as err:
                raise errors.bad_request("continue key is not valid") from err
        body = _list_body(res, items[start : start + limit] if limit else items[start:], rv)
        if limit and start + limit < len(items):
            body["metadata"]["continue"] = base64.urlsafe_b64encode(
                json.dumps({"rv": rv, "start": start + limit}).encode()
            ).decode()
            body["metadata"]["remainingItemCount"] = len(items) - start - limit
        return body

    async def _admin(self, request: web.Request, action: str) -> web.StreamResponse:
        if self.admin is None:
            raise errors.ApiError(404, "no admin endpoint")
        args = await _json(request) if request.can_read_body else {}
        result = await self.admin(action, args or {})
        return web.json_response({"ok": True, "result": result})


def flag(value: str | None) -> bool:
    """A boolean query parameter (the Python client sends `True`)."""
    return (value or "").lower() in ("true", "1")


def _selectors(res: Resource, request: web.Request) -> tuple[LabelSelector, FieldSelector]:
    return (
        LabelSelector.parse(request.query.get("labelSelector")),
        FieldSelector.parse(request.query.get("fieldSelector"), res.field_labels),
    )


def _list_body(res: Resource, items: list[Obj], rv: int) -> dict[str, Any]:
    return {
        "kind": f"{res.kind}List",
        "apiVersion": res.api_version,
        "metadata": {"resourceVersion": str(rv)},
        "items": items,
    }


async def _json(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError as err:
        raise errors.bad_request(f"error decoding request body: {err}") from err


def _check_pod_update(current: Obj, new: Obj) -> None:
    """Pods are immutable except a few spec fields, as the apiserver enforces."""

    def comparable(spec: Any) -> Any:
        spec = json.loads(json.dumps(spec or {}))
        for c in spec.get("containers") or []:
            c.pop("image", None)
        for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
            spec.pop(key, None)
        return spec

    if comparable(current.get("spec")) != comparable(new.get("spec")):
        name = current["metadata"]["name"]
        raise errors.invalid(
            "Pod",
            name,
            "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
            "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions "
            "to existing tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        )


def error_response(err: errors.ApiError) -> web.Response:
    headers = {"Retry-After": str(err.retry_after)} if err.retry_after else None
    return web.json_response(err.status(), status=err.code, headers=headers)
