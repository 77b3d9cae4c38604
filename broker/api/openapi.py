"""The OpenAPI 3.1 document, generated from the endpoint table and the pydantic models.

Built from the same `Endpoint` list that registers the routes, so a route
cannot exist without being documented, nor be documented without existing.
"""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .endpoints import API, Endpoint
from .models import Problem

REF = "#/components/schemas/{model}"
PARAM = re.compile(r"\{(\w+)\}")


def _model_of(response: Any) -> type[BaseModel]:
    args = typing.get_args(response)
    return args[0] if args else response


def _schema_of(response: Any) -> dict[str, Any]:
    if response is None:
        return {"type": "object"}
    ref = {"$ref": REF.format(model=_model_of(response).__name__)}
    return {"type": "array", "items": ref} if typing.get_args(response) else ref


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(e: Endpoint) -> dict[str, Any]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in PARAM.findall(e.path)
    ] + [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {"type": kind},
            "description": text,
        }
        for name, kind, text in e.query
    ]
    problem = {"$ref": REF.format(model="Problem")}
    responses = {
        str(e.status): _json(_schema_of(e.response), "OK"),
        "401": _json(problem, "no valid bearer token"),
    }
    if not e.public:
        responses["403"] = _json(problem, f"the token lacks the {e.scope} scope")
    if e.fail_status:
        responses[str(e.fail_status)] = _json(problem, "the action could not be done")
    if e.body is not None:
        responses["422"] = _json(problem, "the body is not valid")
    op: dict[str, Any] = {
        "operationId": e.handler.__name__,
        "summary": e.summary,
        "description": "Public." if e.public else f"Needs a token with the `{e.scope}` scope.",
        "parameters": params,
        "responses": responses,
    }
    if e.public:
        op["security"] = []
    if e.text_body:
        responses["422"] = _json(problem, "the body is not valid (`issues`: file, line, field)")
        op["requestBody"] = {
            "required": True,
            "content": {e.text_body: {"schema": {"type": "string"}}},
        }
    if e.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": REF.format(model=e.body.__name__)}}
            },
        }
    return op


def document(endpoints: list[Endpoint] | None = None) -> dict[str, Any]:
    endpoints = endpoints if endpoints is not None else API
    pairs: list[tuple[type[BaseModel], Any]] = [(Problem, "serialization")]
    for e in endpoints:
        if e.response is not None and isinstance(_model_of(e.response), type):
            pairs.append((_model_of(e.response), "serialization"))
        if e.body is not None:
            pairs.append((e.body, "validation"))
    unique = list(dict.fromkeys(pairs))
    _, top = models_json_schema(unique, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        paths.setdefault(e.full_path, {})[e.method.lower()] = _operation(e)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sdbroker admin API",
            "version": "1",
            "description": "The admin console's reads and actions. Authenticate with "
            "`Authorization: Bearer <token>` or `X-Sdbroker-Token: <token>` (behind IAP); an "
            "admin creates and revokes tokens, with scopes read, sessions, fleet and tokens, "
            "in the console.",
        },
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "header": {"type": "apiKey", "in": "header", "name": "X-Sdbroker-Token"},
            },
        },
        "security": [{"bearer": []}, {"header": []}],
    }
