"""Typed application keys: every shared object the handlers reach through the app."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from fleet import Autoscaler, Controller, Fleet, FleetStore, Handler, History, Tasks

from .activity import ActivityRecorder
from .auth import Authenticator
from .proxy import PodPool
from .routing import Router
from .security.access import AccessPolicy
from .security.signing import Signer
from .settings import Settings

SETTINGS = web.AppKey("settings", Settings)
SIGNER = web.AppKey("signer", Signer)
AUTH = web.AppKey("auth", Authenticator)
ACCESS = web.AppKey("access", AccessPolicy)
REDIS = web.AppKey("redis", Redis)
STORE = web.AppKey("store", FleetStore)
FLEET = web.AppKey("fleet", Fleet)
CONTROLLER = web.AppKey("controller", Controller)
ROUTER = web.AppKey("router", Router)
ACTIVITY = web.AppKey("activity", ActivityRecorder)
HTTP = web.AppKey("http", aiohttp.ClientSession)
#: Proxied requests to pods (the WebSocket handshake and fleet calls use HTTP).
PODS = web.AppKey("pods", PodPool)
#: Every background task of the runtime, with its health (readyz shows it).
TASKS = web.AppKey("tasks", Tasks)
AUTOSCALER = web.AppKey("autoscaler", Autoscaler)
HISTORY = web.AppKey("history", History)
#: The pub/sub handlers the event listener calls (the runtime's; auth appends its own).
EVENT_HANDLERS = web.AppKey("event_handlers", list[Handler])
