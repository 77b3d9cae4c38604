"""The admin JSON API (/_broker/api/v1): bearer tokens, pydantic bodies, an OpenAPI document."""

from .endpoints import API, add_routes
from .openapi import document

__all__ = ["API", "add_routes", "document"]
