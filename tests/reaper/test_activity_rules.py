"""Which proxied requests count as user activity: defaults per probe kind, spec overrides."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet import parse_spec
from fleet.activity_rules import ActivityClassifier, classifier_for

A1111 = [
    # (method, path, navigation, counts)
    ("GET", "/", False, True),  # the page
    ("HEAD", "/", False, True),
    ("GET", "/some/page", True, True),  # any page load
    ("POST", "/sdapi/v1/txt2img", False, True),
    ("GET", "/sdapi/v1/options", False, True),
    ("POST", "/queue/join", False, True),  # Gradio 4
    ("POST", "/upload", False, True),
    ("POST", "/run/predict", False, True),
    ("POST", "/internal/progress", False, False),  # the page's own polling
    ("GET", "/internal/ping", False, False),
    ("GET", "/heartbeat/abc123", False, False),
    ("POST", "/heartbeat/abc123", False, False),
    ("GET", "/queue/data", False, False),  # Gradio 4 SSE stream
    ("GET", "/sdapi/v1/progress", False, False),
    ("GET", "/file=/tmp/gradio/x.png", False, False),
    ("GET", "/assets/index-1234.js", False, False),
    ("GET", "/stub/whoami", False, False),  # a GET nobody listed is not a person
    ("WS", "/queue/join", False, True),  # browser-sent WebSocket messages
    ("WS", "/stub/ws-echo", False, True),
]

COMFYUI = [
    ("POST", "/prompt", False, True),
    ("POST", "/api/prompt", False, True),
    ("POST", "/upload/image", False, True),
    ("GET", "/prompt", False, False),
    ("GET", "/api/prompt", False, False),
    ("GET", "/history", False, False),
    ("POST", "/interrupt", False, False),
    ("GET", "/", False, True),
    ("WS", "/ws", False, True),
]


@pytest.mark.parametrize(("method", "path", "navigation", "counts"), A1111)
def test_a1111_defaults(method: str, path: str, navigation: bool, counts: bool) -> None:
    rules = ActivityClassifier("a1111")
    assert rules.counts(method, path, navigation=navigation) is counts
    assert rules.explain(method, path, navigation=navigation)[0] is counts


@pytest.mark.parametrize(("method", "path", "navigation", "counts"), COMFYUI)
def test_comfyui_defaults(method: str, path: str, navigation: bool, counts: bool) -> None:
    assert ActivityClassifier("comfyui").counts(method, path, navigation=navigation) is counts


def test_generic_probe_counts_what_changes_state() -> None:
    rules = ActivityClassifier("http:/healthz")
    assert rules.counts("DELETE", "/thing")
    assert rules.counts("PUT", "/thing")
    assert not rules.counts("GET", "/thing")
    assert rules.counts("GET", "/thing", navigation=True)


SPEC = """
backend: local
profiles:
  - name: custom
    max: 1
    probe: a1111
    activity:
      ignore: ["POST /run/predict", "WS /queue/join", "/stub/*"]
      count: ["GET /sdapi/v1/progress", "POST /stub/upload"]
    local: {command: [webui, "{port}"]}
  - name: plain
    max: 1
    local: {command: [webui, "{port}"]}
"""


def test_spec_rules_override_the_defaults() -> None:
    spec = parse_spec(SPEC)
    rules = classifier_for(spec, "custom")
    assert rules.counts("GET", "/sdapi/v1/progress")  # count beats a default ignore
    assert not rules.counts("POST", "/run/predict")  # ignore beats a default count
    assert not rules.counts_ws("/queue/join")
    assert rules.counts_ws("/other")
    assert rules.counts("POST", "/stub/upload")  # count beats the profile's own ignore
    assert not rules.counts("POST", "/stub/other")
    assert not rules.counts("GET", "/stub/page", navigation=True)  # ignore beats a page load
    assert rules.explain("POST", "/run/predict") == (False, "ignore: POST /run/predict")
    plain = classifier_for(spec, "plain")
    assert plain.counts("POST", "/run/predict")
    assert classifier_for(spec, "custom") is rules  # built once per loaded spec
    assert classifier_for(parse_spec(SPEC), "custom") is not rules  # a reload builds anew
    assert classifier_for(spec, "removed").counts("POST", "/x")  # unknown profile: a1111


PATHS = st.lists(
    st.sampled_from(["sdapi", "v1", "progress", "internal", "heartbeat", "queue", "data", "x"]),
    max_size=4,
).map(lambda parts: "/" + "/".join(parts))


@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "WS", "OPTIONS"]),
    path=PATHS,
    navigation=st.booleans(),
)
def test_fast_path_agrees_with_explain(method: str, path: str, navigation: bool) -> None:
    """The combined regexes and the memo give the same answer as walking the rules one by one."""
    for rules in (ActivityClassifier("a1111"), ActivityClassifier("comfyui")):
        first = rules.counts(method, path, navigation=navigation)
        assert first == rules.explain(method, path, navigation=navigation)[0]
        assert rules.counts(method, path, navigation=navigation) == first  # memoised
