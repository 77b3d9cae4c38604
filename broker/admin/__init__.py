"""The admin console (/_broker/admin) and what it shares with the JSON API.

`require_admin` is the one admin check; `ops` holds the reads and actions;
`tokens` the API's bearer tokens; `models` what both the console and the
API show; `confirm` the step before Reclaim and Delete; `figures` the cells
the console refreshes in place.
"""

from . import ops
from .console import CONSOLE, add_routes
from .guard import require_admin
from .models import Done
from .tokens import Tokens

__all__ = ["CONSOLE", "Done", "Tokens", "add_routes", "ops", "require_admin"]
