"""Debian's prometheus package: the server and promtool (the Makefile and .ci/run install it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.support import in_ci

MONITORING = Path(__file__).resolve().parents[2] / "ingress" / "components" / "monitoring"


def _binary(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(path).exists():
        if in_ci():
            pytest.fail(f"CI=true but {name} is missing: .ci/run installs Debian's prometheus")
        pytest.skip(f"{name} is not installed (apt-get install prometheus; make install-test does)")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return _binary("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return _binary("prometheus")


def alert_rules() -> dict:
    """The rule groups of the shipped PrometheusRule: what Prometheus itself loads."""
    return yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())["spec"]


def write_rules(directory: Path) -> Path:
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(alert_rules(), sort_keys=False))
    return path
