"""Fleet backends: where pods run. `make_backend` picks one by `backend:` in fleet.yaml."""

from __future__ import annotations

from pathlib import Path

from ..spec import FleetSpec
from .base import Backend


def make_backend(spec: FleetSpec, data_dir: Path) -> Backend:
    if spec.backend == "local":
        from .local import LocalBackend

        return LocalBackend(spec, data_dir)
    if spec.backend == "kubernetes":
        from .kubernetes import KubernetesBackend

        return KubernetesBackend(spec)
    if spec.backend == "agones":
        from .agones import AgonesBackend

        return AgonesBackend(spec)
    raise NotImplementedError(f"backend {spec.backend!r} is not available yet")


__all__ = ["Backend", "make_backend"]
