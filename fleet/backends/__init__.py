"""Fleet backends: where pods run. `make_backend` picks one by `backend:` in fleet.yaml."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..spec import FleetSpec
from .base import Backend, OnChange
from .isolation import Isolation, decide_for


def make_backend(
    spec: FleetSpec,
    data_dir: Path,
    *,
    on_change: OnChange = None,
    on_settings: Callable[[str, str, str], None] | None = None,
) -> Backend:
    """The backend `spec` names; `on_change` is called on each platform change it sees
    (the controller's Doorbell.wake: fleet/controller.py); `on_settings` with each restore
    and save of people's WebUI settings the broker itself makes (local backend only:
    elsewhere the pod's agent does them, local_settings.OnSettings)."""
    if spec.backend == "local":
        from .local import LocalBackend

        return LocalBackend(spec, data_dir, on_change=on_change, on_settings=on_settings)
    if spec.backend == "kubernetes":
        from .kubernetes import KubernetesBackend

        return KubernetesBackend(spec, on_change=on_change)
    if spec.backend == "agones":
        from .agones import AgonesBackend

        return AgonesBackend(spec, on_change=on_change)
    raise NotImplementedError(f"backend {spec.backend!r} is not available yet")


def isolation_of(spec: FleetSpec, data_dir: Path) -> dict[str, Isolation]:
    """Per local profile, what its WebUIs get on this machine, as the local backend will
    decide it (raises BackendError for `isolation: strict` where it cannot hold). Other
    backends: {} (each pod has a network and file system of its own)."""
    if spec.backend != "local":
        return {}
    return {
        p.name: decide_for(p.local.isolation, p.name, p.local.command, data_dir, spec.outputs)
        for p in spec.profiles
        if p.local is not None
    }


__all__ = ["Backend", "isolation_of", "make_backend"]
