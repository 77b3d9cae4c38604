"""Injected failures: for pods as they start, and for API requests."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from . import errors
from .selectors import LabelSelector


class PodFailure(StrEnum):
    """What goes wrong when a matching pod's containers start."""

    IMAGE_PULL = "image_pull"  # ErrImagePull <-> ImagePullBackOff, phase stays Pending
    CRASH_LOOP = (
        "crash_loop"  # exits with code 1 after `crash_after`, CrashLoopBackOff, restarts grow
    )
    OOM = "oom"  # OOMKilled (137) after `crash_after`; restarts, or phase Failed with restartPolicy Never


@dataclass
class PodFailureRule:
    kind: PodFailure
    image: str | None = None  # fnmatch pattern on any container image
    name: str | None = None  # fnmatch pattern on the pod name
    namespace: str | None = None
    selector: LabelSelector = field(default_factory=LabelSelector)
    remaining: int | None = None  # None: every matching pod
    crash_after: float = 5.0  # simulated seconds a crashing container runs

    def matches(self, pod: dict[str, Any]) -> bool:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.namespace and meta.get("namespace") != self.namespace:
            return False
        if self.name and not fnmatch.fnmatchcase(meta["name"], self.name):
            return False
        if self.image:
            images = [c.get("image", "") for c in spec.get("containers") or []]
            if not any(fnmatch.fnmatchcase(i, self.image) for i in images):
                return False
        return self.selector.matches(meta.get("labels"))


@dataclass
class ApiErrorRule:
    status: int
    verb: str = "*"  # get list watch create update patch delete deletecollection, or *
    resource: str | None = None  # plural, e.g. "pods", "gameserverallocations"
    name: str | None = None
    namespace: str | None = None
    path: str | None = None  # regex searched in the request path
    remaining: int = 1
    message: str | None = None
    retry_after: int | None = None

    def matches(
        self, verb: str, resource: str | None, ns: str | None, name: str | None, path: str
    ) -> bool:
        return (
            self.remaining > 0
            and self.verb in ("*", verb)
            and (self.resource is None or self.resource == resource)
            and (self.namespace is None or self.namespace == ns)
            and (self.name is None or self.name == name)
            and (self.path is None or re.search(self.path, path) is not None)
        )

    def error(self, plural: str, group: str, name: str | None) -> errors.ApiError:
        code, message = self.status, self.message
        if code == 409:
            err = errors.conflict(plural or "resource", group, name or "")
        elif code == 410:
            err = errors.ApiError(
                410, "The resourceVersion for the provided watch is too old.", reason="Expired"
            )
        elif code == 429:
            err = errors.ApiError(
                429, "Too many requests, please try again later.", retry_after=self.retry_after or 1
            )
        elif code == 500:
            err = errors.ApiError(500, "Internal error occurred: injected by kubesim")
        elif code == 503:
            err = errors.ApiError(
                503,
                "the server is currently unable to handle the request",
                retry_after=self.retry_after,
            )
        elif code == 504:
            err = errors.ApiError(504, "Timeout: request did not complete within requested timeout")
        else:
            err = errors.ApiError(code, f"injected error {code}")
        if message:
            err.message = message
        return err


@dataclass
class Faults:
    pod_rules: list[PodFailureRule] = field(default_factory=list)
    api_rules: list[ApiErrorRule] = field(default_factory=list)
    allocation_contention: int = 0  # next N allocations answer Contention
    allocation_drops: int = 0  # next N allocations succeed but the response is lost (agones#607)

    def take_pod_failure(self, pod: dict[str, Any]) -> PodFailureRule | None:
        for rule in self.pod_rules:
            if rule.matches(pod):
                if rule.remaining is not None:
                    rule.remaining -= 1
                return rule
        return None

    def take_api_error(
        self, verb: str, resource: str | None, ns: str | None, name: str | None, path: str
    ) -> ApiErrorRule | None:
        for rule in self.api_rules:
            if rule.matches(verb, resource, ns, name, path):
                rule.remaining -= 1
                return rule
        return None
