"""The admin JSON API under /_broker/api/v1: one table of endpoints, one dispatcher.

Bearer tokens only, never the browser's cookies: a cross-site page can make
a browser send cookies but not an Authorization header, so the API needs no
CSRF token. Each endpoint names its body model and its response type; the
dispatcher validates the one and serialises the other, and openapi.py
documents both from this same table.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from fleet import StoreUnavailable

from ..admin import ops
from ..admin.models import (
    AuditView,
    Done,
    EndedPage,
    HistoryView,
    PodView,
    ProfileView,
    Scope,
    SessionView,
    TokenView,
    UserPage,
    WaiterView,
)
from ..admin.tokens import Tokens
from ..appkeys import ACCESS, REDIS, SETTINGS
from ..metrics import redis_error
from ..middleware import API_TOKEN
from .models import SizeChange, StartSession
from .spec import SpecRefused, SpecResult, put_spec
from .usage import UsageReport, usage
from .users import BadInput, ended_sessions, start_session, users

BASE = "/_broker/api/v1"
Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # below BASE, aiohttp style: /sessions/{user}/reclaim
    summary: str
    handler: Handler  # (request, token, body?) -> response object
    response: Any
    body: type[BaseModel] | None = None
    query: tuple[tuple[str, str, str], ...] = ()  # (name, JSON type, description)
    status: int = 200
    fail_status: int = 0  # status when the handler returns Done(ok=False)
    public: bool = False
    scope: Scope = "read"  # what a token needs for it (broker.admin.models.SCOPES)
    text_body: str = ""  # media type of a body the handler reads itself (PUT /spec: YAML)

    @property
    def full_path(self) -> str:
        return BASE + self.path


def problem(status: int, error: str, detail: str, **headers: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status, headers=headers)


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    return default if value is None else value.lower() in ("1", "true", "yes")


def _number(request: web.Request, name: str, default: float, top: float) -> float:
    try:
        return min(top, max(0.0, float(request.query.get(name, default))))
    except ValueError:
        return default


# --- handlers: (request, token[, body]) -> a response object --------------------------


async def list_profiles(request: web.Request, token: TokenView) -> list[ProfileView]:
    return await ops.profiles(request.app)


async def list_sessions(request: web.Request, token: TokenView) -> list[SessionView]:
    return await ops.sessions(request.app, busy=_flag(request, "busy", True))


async def reclaim_session(request: web.Request, token: TokenView) -> Done:
    user, why = request.match_info["user"], request.query.get("reason", "")
    return await ops.reclaim(request.app, user, f"token:{token.name}", why)


async def block_user(request: web.Request, token: TokenView) -> Done:
    user, why = request.match_info["user"], request.query.get("reason", "")
    return await ops.block(request.app, user, f"token:{token.name}", why)


async def unblock_user(request: web.Request, token: TokenView) -> Done:
    return await ops.unblock(request.app, request.match_info["user"], f"token:{token.name}")


async def log_out_user(request: web.Request, token: TokenView) -> Done:
    return await ops.log_out(request.app, request.match_info["user"], f"token:{token.name}")


async def list_pods(request: web.Request, token: TokenView) -> list[PodView]:
    return await ops.pods(request.app)


async def delete_pod(request: web.Request, token: TokenView) -> Done:
    pod, why = request.match_info["pod"], request.query.get("reason", "")
    return await ops.delete_pod(request.app, pod, f"token:{token.name}", why)


async def list_queue(request: web.Request, token: TokenView) -> list[WaiterView]:
    return await ops.queue(request.app)


async def list_reclaims(request: web.Request, token: TokenView) -> list[AuditView]:
    return await ops.reclaims(request.app, int(_number(request, "count", 30, 500)))


async def get_history(request: web.Request, token: TokenView) -> list[HistoryView]:
    return await ops.history(request.app, _number(request, "hours", 6, 24))


async def set_sizes(request: web.Request, token: TokenView, body: SizeChange) -> Done:
    name = request.match_info["profile"]
    by = f"token:{token.name}"
    try:
        return await ops.set_sizes(
            request.app, name, by, buffer=body.buffer, min=body.min, max=body.max
        )
    except KeyError:
        return Done(ok=False, detail=f"no profile {name!r}")


async def clear_sizes(request: web.Request, token: TokenView) -> Done:
    name = request.match_info["profile"]
    try:
        return await ops.clear_sizes(request.app, name, f"token:{token.name}")
    except KeyError:
        return Done(ok=False, detail=f"no profile {name!r}")


async def list_tokens(request: web.Request, token: TokenView) -> list[TokenView]:
    return await Tokens(request.app[REDIS]).all()


async def list_users(request: web.Request, token: TokenView) -> UserPage:
    return await users(request)


async def start_user_session(request: web.Request, token: TokenView, body: StartSession) -> Done:
    return await start_session(request, f"token:{token.name}", body.profile)


async def user_sessions(request: web.Request, token: TokenView) -> EndedPage:
    return await ended_sessions(request)


async def get_usage(request: web.Request, token: TokenView) -> UsageReport:
    return await usage(request)


async def openapi_json(request: web.Request, token: TokenView | None) -> dict[str, Any]:
    from .openapi import document  # the document is built from this module's table

    return document()


PAGE_QUERY = (
    ("cursor", "string", "the `next` of the previous page"),
    ("limit", "integer", "how many (default 100 people or 50 sessions, at most 500)"),
)
USER_QUERY = PAGE_QUERY + (
    ("session", "boolean", "only people with (true) or without (false) a session now"),
    ("seen_after", "number", "only people active at or after this unix time"),
    ("seen_before", "number", "only people last active before this unix time"),
    (
        "min_gpu_minutes",
        "number",
        "only people who used at least this many GPU-minutes "
        "(the session ends the audit stream keeps, about a week, and the session now)",
    ),
    ("blocked", "boolean", "only people blocked (true) or not blocked (false) by an admin"),
)

USAGE_QUERY = (
    ("since", "string", "unix seconds, or a duration back from now such as 24h or 7d "
     "(default 24h); the audit stream keeps about a week of session ends"),
    ("until", "string", "unix seconds or a duration back from now (default now)"),
    ("by", "string", "user (default) or group: a session counts for each group its user was "
     "in when it began"),
)  # fmt: skip

#: An admin's words on an ending, as the console's Reclaim/Delete confirmation takes them.
REASON_QUERY = (("reason", "string", "why, kept in the audit entry's detail (one line, at most "
                 "200 characters)"),)  # fmt: skip

API: list[Endpoint] = [
    Endpoint("GET", "/fleet", "Profiles: pods by state, queue, sizes and why", list_profiles, list[ProfileView]),
    Endpoint("GET", "/sessions", "Sessions: user, pod, age, idle for, busy now", list_sessions, list[SessionView],
             query=(("busy", "boolean", "ask each WebUI whether it is generating (default true)"),)),
    Endpoint("POST", "/sessions/{user}/reclaim", "End a user's session now (the pod is deleted)",
             reclaim_session, Done, fail_status=404, scope="sessions", query=REASON_QUERY),
    Endpoint("POST", "/sessions/{user}/logout", "End every login of a user now, on every replica",
             log_out_user, Done, fail_status=404, scope="sessions"),
    Endpoint("GET", "/users", "People seen (name order, paginated) with their session now",
             list_users, UserPage, query=USER_QUERY),
    Endpoint("POST", "/users/{user}/session", "Start a session for a user now: a warm pod is claimed "
             "(never queued)", start_user_session, Done, body=StartSession, status=201, fail_status=409,
             scope="sessions"),
    Endpoint("DELETE", "/users/{user}/session", "End a user's session now (as POST /sessions/{user}/reclaim)",
             reclaim_session, Done, fail_status=404, scope="sessions", query=REASON_QUERY),
    Endpoint("DELETE", "/users/{user}/logins", "End every login of a user (as POST /sessions/{user}/logout)",
             log_out_user, Done, fail_status=404, scope="sessions"),
    Endpoint("PUT", "/users/{user}/block", "Block a user from WebUIs: their session ends and "
             "none starts until unblocked", block_user, Done, fail_status=409, scope="sessions",
             query=REASON_QUERY),
    Endpoint("DELETE", "/users/{user}/block", "Unblock a user", unblock_user, Done,
             fail_status=404, scope="sessions"),
    Endpoint("GET", "/users/{user}/sessions", "A user's ended sessions, newest first (audit stream)",
             user_sessions, EndedPage, query=PAGE_QUERY),
    Endpoint("GET", "/usage", "GPU-minutes per user or group over a window (ended and running "
             "sessions)", get_usage, UsageReport, query=USAGE_QUERY),
    Endpoint("GET", "/pods", "Every pod the fleet knows", list_pods, list[PodView]),
    Endpoint("DELETE", "/pods/{pod}", "Delete a pod (a claimed pod's session ends)", delete_pod, Done,
             fail_status=404, scope="fleet", query=REASON_QUERY),
    Endpoint("GET", "/queue", "People waiting, in serving order (priority, then first come first)", list_queue, list[WaiterView]),
    Endpoint("GET", "/reclaims", "Recent reclaims from the audit stream, newest first", list_reclaims,
             list[AuditView], query=(("count", "integer", "how many (default 30, at most 500)"),)),
    Endpoint("GET", "/history", "claimed/ready/queue over time per profile", get_history, list[HistoryView],
             query=(("hours", "number", "how far back (default 6, at most 24)"),)),
    Endpoint("PUT", "/profiles/{profile}/sizes", "Change a profile's sizes until the next schedule change",
             set_sizes, Done, body=SizeChange, fail_status=422, scope="fleet"),
    Endpoint("DELETE", "/profiles/{profile}/sizes", "Drop the override: back to the file and its schedule",
             clear_sizes, Done, fail_status=404, scope="fleet"),
    Endpoint("PUT", "/spec", "Validate the fleet YAML sent, show its changes and diff, apply it",
             put_spec, SpecResult, scope="fleet", text_body="application/yaml",
             query=(("dry_run", "boolean", "validate and diff only, store nothing"),)),
    Endpoint("GET", "/tokens", "API tokens: owner, scopes, expiry, last use (never the tokens)",
             list_tokens, list[TokenView], scope="tokens"),
    Endpoint("GET", "/openapi.json", "This document", openapi_json, None, public=True),
]  # fmt: skip


def bearer(request: web.Request) -> str | None:
    """`X-Sdbroker-Token` first, else `Authorization: Bearer`. Behind IAP a script's own
    Google ID token may hold Authorization (docs/operations.md, "Scripts behind IAP");
    the middleware keeps X-Sdbroker-Token for the API alone, never for a pod."""
    if request.get(API_TOKEN):
        return str(request[API_TOKEN])
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def dispatcher(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    adapter = TypeAdapter(endpoint.response) if endpoint.response is not None else None

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            token = await Tokens(request.app[REDIS]).verify(
                bearer(request), request.app[ACCESS], ttl=request.app[SETTINGS].api_token_ttl
            )
            if token is None and not endpoint.public:
                return problem(
                    401,
                    "Not authorised",
                    "Send Authorization: Bearer <token> (or X-Sdbroker-Token: <token>); an "
                    "admin creates tokens in /_broker/admin. A token expires, and ends when "
                    "its creator is no admin.",
                    **{"WWW-Authenticate": 'Bearer realm="sdbroker"'},
                )
            if token is not None and not endpoint.public and endpoint.scope not in token.scopes:
                return problem(
                    403,
                    f"Needs the {endpoint.scope} scope",
                    f"{endpoint.method} {endpoint.path} needs a token with the "
                    f"{endpoint.scope!r} scope; this one has {', '.join(token.scopes)}.",
                )
            args: list[Any] = [request, token]
            if endpoint.body is not None:
                try:
                    raw = await request.read()
                except ConnectionResetError:  # the client left mid-body (aiohttp 3.14,
                    # web_protocol.py RequestHandler.connection_lost): nobody reads an answer
                    return problem(400, "Incomplete body", "The connection closed mid-body.")
                try:
                    args.append(endpoint.body.model_validate_json(raw))
                except ValidationError as exc:
                    detail = "; ".join(
                        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                        for e in exc.errors()
                    )
                    return problem(422, "Invalid body", detail)
            result = await endpoint.handler(*args)
        except BadInput as exc:
            return problem(400, "Bad request", str(exc))
        except SpecRefused as exc:
            return web.json_response(
                {
                    "error": "Invalid fleet spec",
                    "detail": f"{exc}; the running fleet is unchanged",
                    "issues": [i.model_dump() for i in exc.issues],
                },
                status=422,
            )
        except StoreUnavailable:
            redis_error()
            return problem(
                503, "Temporarily unavailable", "Redis is unreachable.", **{"Retry-After": "5"}
            )
        if isinstance(result, Done) and not result.ok and endpoint.fail_status:
            return problem(endpoint.fail_status, "Not done", result.detail)
        body = adapter.dump_json(result) if adapter is not None else json.dumps(result).encode()
        return web.Response(body=body, status=endpoint.status, content_type="application/json")

    return handle


def add_routes(app: web.Application) -> None:
    for endpoint in API:
        app.router.add_route(endpoint.method, endpoint.full_path, dispatcher(endpoint))
