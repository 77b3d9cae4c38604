"""The admin JSON API (/_broker/api/v1): bearer tokens, pydantic bodies, an OpenAPI document."""

from .endpoints import API, BASE, Endpoint, add_routes
from .openapi import document

__all__ = ["API", "BASE", "Endpoint", "add_routes", "document"]
