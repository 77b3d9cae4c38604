"""The running sdbroker's version: the one source for `sdbroker --version` and the
`sdbroker_build_info{version}` metric, read from the installed package's metadata
(pyproject.toml's `version`, docs/releases.md says how it moves)."""

from __future__ import annotations

import importlib.metadata

try:
    VERSION = importlib.metadata.version("sdbroker")
except importlib.metadata.PackageNotFoundError:  # run from a source tree never installed
    VERSION = "unknown"
