"""The broker: identity, routing, reverse proxy, pages and the `sdbroker` CLI.

Public face: `build_app(settings, spec)`, `Settings`, `main` (the console script).
"""

from .app import build_app
from .cli import main
from .settings import Settings

__all__ = ["Settings", "build_app", "main"]
