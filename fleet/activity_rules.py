"""Which proxied requests are a person using their WebUI, and which are the page polling itself.

The reaper reclaims a pod after `idle_timeout` without *user* activity. An open
tab keeps talking to its WebUI on its own (progress polls, Gradio heartbeats,
SSE streams, thumbnails), so counting every request would keep an abandoned
tab's GPU forever (jupyter-server-proxy#471). This module decides, per proxied
request or browser-sent WebSocket message, whether it counts.

Rules are `METHOD PATTERN` strings (see `fleet.spec.types.ActivityRule`):
METHOD is GET, POST, PUT, PATCH, DELETE, WS (a WebSocket message sent by the
browser) or * (any, including WS); PATTERN is a glob on the request path
without its query (`*` crosses `/`). GET rules also match HEAD.

A request is decided by the first stage that has a matching rule:

1. the profile's own `activity.count` rules: counts;
2. the profile's own `activity.ignore` rules: does not count;
3. the built-in ignore rules of the profile's probe kind: does not count;
4. the built-in count rules of the probe kind: counts (both registered with
   the kind in `fleet.probes`);
5. otherwise: page loads (navigations) and browser WebSocket messages count,
   everything else does not.

This runs on every proxied request, so each stage is one precompiled regex per
method, decisions are memoised per (method, path), and classifiers are cached
per profile object (a reloaded spec builds new ones).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .probes import FALLBACK_KIND, kind_of
from .spec import FleetSpec, Profile, split_rule

WS = "WS"
_ANY = "*"
_MEMO_MAX = 4096  # distinct (method, path) decisions kept per classifier before starting over
_CACHE_MAX = 64  # classifiers kept (one per profile per loaded spec)


def defaults_for(probe: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(ignore, count) built-in rules of a probe kind, as registered in fleet.probes.

    A kind no longer registered gets the fallback kind's rules (like a removed profile).
    """
    try:
        kind = kind_of(probe)
    except ValueError:
        kind = kind_of(FALLBACK_KIND)
    return kind.ignore, kind.count


@dataclass(frozen=True, slots=True)
class _Stage:
    """One list of rules: which method each applies to and its path regex."""

    name: str
    counts: bool
    rules: tuple[tuple[str, str, re.Pattern[str]], ...]  # (rule text, method, regex)

    @classmethod
    def build(cls, name: str, counts: bool, rules: Iterable[str]) -> _Stage:
        compiled = []
        for rule in rules:
            method, pattern = split_rule(rule)
            compiled.append((rule, method, re.compile(fnmatch.translate(pattern))))
        return cls(name, counts, tuple(compiled))

    def for_method(self, method: str) -> list[tuple[str, re.Pattern[str]]]:
        want = "GET" if method == "HEAD" else method
        return [(rule, rx) for rule, m, rx in self.rules if m in (want, _ANY)]

    def combined(self, method: str) -> re.Pattern[str] | None:
        """All of this stage's patterns for `method` as one alternation (None: no rule)."""
        parts = [rx.pattern for _, rx in self.for_method(method)]
        return re.compile("|".join(f"(?:{p})" for p in parts)) if parts else None


class ActivityClassifier:
    """Decides whether a request counts as user activity, for one profile's rules."""

    def __init__(
        self,
        probe: str = FALLBACK_KIND,
        *,
        count: Iterable[str] = (),
        ignore: Iterable[str] = (),
    ) -> None:
        default_ignore, default_count = defaults_for(probe)
        self.probe = probe
        self.stages = (
            _Stage.build("count", True, count),
            _Stage.build("ignore", False, ignore),
            _Stage.build(f"{probe} default ignore", False, default_ignore),
            _Stage.build(f"{probe} default count", True, default_count),
        )
        self._by_method: dict[str, tuple[tuple[re.Pattern[str], bool], ...]] = {}
        self._memo: dict[tuple[str, str, bool], bool] = {}

    @classmethod
    def for_profile(cls, profile: Profile) -> ActivityClassifier:
        rules = profile.activity
        if rules is None:
            return cls(profile.probe)
        return cls(profile.probe, count=rules.count, ignore=rules.ignore)

    def _table(self, method: str) -> tuple[tuple[re.Pattern[str], bool], ...]:
        table = self._by_method.get(method)
        if table is None:
            table = tuple(
                (rx, stage.counts)
                for stage in self.stages
                if (rx := stage.combined(method)) is not None
            )
            self._by_method[method] = table
        return table

    def counts(self, method: str, path: str, *, navigation: bool = False) -> bool:
        """True when this request is a person using the WebUI.

        `navigation` is True for a page load (a GET the browser shows as a
        document); it counts unless a rule says otherwise.
        """
        key = (method, path, navigation)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        decided = self._decide(method, path, navigation)
        if len(self._memo) >= _MEMO_MAX:
            self._memo.clear()
        self._memo[key] = decided
        return decided

    def counts_ws(self, path: str) -> bool:
        """True when messages the browser sends on a WebSocket at `path` count."""
        return self.counts(WS, path)

    def _decide(self, method: str, path: str, navigation: bool) -> bool:
        for rx, counts in self._table(method):
            if rx.match(path):
                return counts
        return navigation or method == WS

    def explain(self, method: str, path: str, *, navigation: bool = False) -> tuple[bool, str]:
        """The decision and the rule (or fallback) that made it, for admins and tests."""
        for stage in self.stages:
            for rule, rx in stage.for_method(method):
                if rx.match(path):
                    return stage.counts, f"{stage.name}: {rule}"
        if method == WS:
            return True, "fallback: browser WebSocket messages count"
        if navigation:
            return True, "fallback: page loads count"
        return False, "fallback: not user activity"


_cache: dict[tuple[int, str], tuple[FleetSpec, ActivityClassifier]] = {}


def classifier_for(spec: FleetSpec, profile: str) -> ActivityClassifier:
    """The classifier of a profile of this spec, built once per loaded spec.

    A profile the spec no longer has (removed by a reload while a user still
    holds a pod of it) gets the fallback kind's built-in rules.
    """
    key = (id(spec), profile)
    hit = _cache.get(key)
    if hit is not None and hit[0] is spec:
        return hit[1]
    try:
        classifier = ActivityClassifier.for_profile(spec.profile(profile))
    except KeyError:
        classifier = ActivityClassifier()
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[key] = (spec, classifier)
    return classifier
