"""The shipped manifests on a real GKE cluster: DNS where GKE really serves it, and WebUI
pods that are Ready when their model is loaded, not when a port opens."""

from __future__ import annotations

import pytest

from fleet import parse_spec
from fleet.backends.kubepods import AGENT_PORT, build_pod
from tests.test_manifests import METADATA, TARGETS, Endpoint, Network, rendered, the, webui_pods

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


@pytest.mark.parametrize("target", TARGETS)
def test_webui_pods_are_ready_when_the_agent_says_so(target: str) -> None:
    """The readiness probe of a plain WebUI pod is the agent's `7861 /ready`, which waits for
    the model: a pod Ready before that was handed to a user who got an error page."""
    spec = parse_spec(the(rendered(target), "ConfigMap", "sdbroker-fleet")["data"]["fleet.yaml"])
    profiles = [p for p in spec.profiles if p.kubernetes is not None]
    if not profiles:
        pytest.skip(f"{target}: no kubernetes-backend profile (Agones: the agent's SDK Ready())")
    for profile in profiles:
        pod = build_pod(profile, f"{profile.name}-abc")
        probes = [c["readinessProbe"] for c in pod["spec"]["containers"] if "readinessProbe" in c]
        assert probes == [
            {
                "httpGet": {"path": "/ready", "port": AGENT_PORT},
                "periodSeconds": 2,
                "failureThreshold": 2,
            }
        ], target
