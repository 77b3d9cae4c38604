"""The shipped manifests on a real GKE cluster: DNS where GKE really serves it, and WebUI
pods that are Ready when their model is loaded, not when a port opens."""

from __future__ import annotations

import sys

import pytest

from fleet import parse_spec
from fleet.backends.kubepods import AGENT_PORT, build_pod
from fleet.spec import Profile
from tests.agent.conftest import IMAGE_DIR
from tests.test_manifests import (
    METADATA,
    TARGETS,
    Endpoint,
    Network,
    agones_pod,
    env_of,
    rendered,
    the,
    webui_pods,
)

if str(IMAGE_DIR) not in sys.path:
    sys.path.insert(0, str(IMAGE_DIR))  # the image runs the agent as the top-level package
from agent import config as agent_config

# Targets whose WebUI pods are plain pods (kubernetes backend); the agones one has GameServers.
PLAIN_POD_TARGETS = [t for t in TARGETS if t != "agones"]
NODELOCAL_DNS = Endpoint("NodeLocal DNSCache", "169.254.20.10", namespace=None)
CLOUD_DNS = Endpoint("Cloud DNS (the metadata server)", "169.254.169.254", namespace=None)


@pytest.mark.parametrize("target", TARGETS)
def test_webuis_resolve_names_with_nodelocal_dns_and_cloud_dns(target: str) -> None:
    """On GKE a pod's resolver may be 169.254.20.10 (NodeLocal DNSCache) or 169.254.169.254
    (Cloud DNS): port 53 there is open, the metadata server's API is not. Before: only the
    kube-dns pods were, and names did not resolve on such clusters."""
    docs = rendered(target)
    net = Network(docs)
    for webui in webui_pods(docs, "alice", "10.8.1.5"):
        for dns in (NODELOCAL_DNS, CLOUD_DNS):
            for protocol in ("UDP", "TCP"):
                assert net.allows(webui, dns, 53, protocol), f"{webui.name} -> {dns.name}"
        for port in (80, 443, 8080):
            assert not net.allows(webui, METADATA, port), f"{webui.name} -> metadata:{port}"
        assert not net.allows(webui, NODELOCAL_DNS, 80)


def plain_pod_profiles(target: str) -> list[Profile]:
    spec = parse_spec(the(rendered(target), "ConfigMap", "sdbroker-fleet")["data"]["fleet.yaml"])
    return [p for p in spec.profiles if p.kubernetes is not None]


def test_each_target_is_checked_for_readiness_one_way_or_the_other() -> None:
    """No target slips through: each has plain-pod profiles (the probe test) or is the agones
    one (the SDK test), never neither (a test once skipped the agones target every run)."""
    for target in TARGETS:
        assert bool(plain_pod_profiles(target)) == (target in PLAIN_POD_TARGETS), target


@pytest.mark.parametrize("target", PLAIN_POD_TARGETS)
def test_webui_pods_are_ready_when_the_agent_says_so(target: str) -> None:
    """The readiness probe of a plain WebUI pod is the agent's `7861 /ready`, which waits for
    the model: a pod Ready before that was handed to a user who got an error page."""
    for profile in plain_pod_profiles(target):
        pod = build_pod(profile, f"{profile.name}-abc")
        probes = [c["readinessProbe"] for c in pod["spec"]["containers"] if "readinessProbe" in c]
        assert probes == [
            {
                "httpGet": {"path": "/ready", "port": AGENT_PORT},
                "periodSeconds": 2,
                "failureThreshold": 2,
            }
        ], target


def test_agones_webui_pods_tell_agones_ready_when_the_model_is_loaded() -> None:
    """A GameServer is Ready when its pod calls SDK Ready(), not when a probe passes: the
    Fleet's agent must run in Agones mode, which calls Ready() once the WebUI has loaded its
    model. It knows it is under Agones by AGONES_SDK_HTTP_PORT, which Agones puts in every
    container of the pod (agones v1.56.0 `addSDKServerEnvVars`); the pod here is the
    Fleet's as Agones makes it (tests/kubeapi/gameserver_pod.py)."""
    pod = agones_pod(the(rendered("agones"), "Fleet"))
    agents = [c for c in pod["spec"]["containers"] if env_of(c).get("SDB_ROLE") == "agent"]
    assert len(agents) == 1, [c["name"] for c in pod["spec"]["containers"]]
    env = {k: v for k, v in env_of(agents[0]).items() if isinstance(v, str)}
    assert agent_config.load(env).mode == "agones", env
