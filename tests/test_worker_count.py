"""SDB_WORKERS: `auto` follows the CPUs the broker may use; numbers are taken as given."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from broker import settings as settings_module
from broker.settings import AUTO_WORKERS, Settings, usable_cpus


def make(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in list(os.environ):
        if name.startswith("SDB_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_auto_is_the_default_and_counts_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    assert make(monkeypatch).workers == "auto"
    monkeypatch.setattr(settings_module, "usable_cpus", lambda: 3)
    assert make(monkeypatch).worker_count == 3
    monkeypatch.setattr(settings_module, "usable_cpus", lambda: 96)
    assert make(monkeypatch).worker_count == AUTO_WORKERS
    assert make(monkeypatch, SDB_WORKERS="12").worker_count == 12  # a number is obeyed


def test_a_cgroup_quota_bounds_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(settings_module, "_cgroup_cpu_quota", lambda: 1.5)
    assert usable_cpus() == 2  # 150% of a CPU: two processes, each partly busy
    monkeypatch.setattr(settings_module, "_cgroup_cpu_quota", lambda: 0.25)
    assert usable_cpus() == 1
    monkeypatch.setattr(settings_module, "_cgroup_cpu_quota", lambda: None)
    assert usable_cpus() == 64


@pytest.mark.parametrize("value", ["0", "65", "many", "-1"])
def test_bad_worker_counts_are_refused_by_name(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        make(monkeypatch, SDB_WORKERS=value)
    assert "workers" in str(refused.value)
