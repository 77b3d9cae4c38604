"""ingress/components/monitoring, rendered on the base with kubectl kustomize: the scrape
objects reach the broker's pods on the port and path that serve metrics, the broker lets
the scraper in (SDB_METRICS_CIDRS, a value the settings accept), and the dashboard
ConfigMap is the shipped JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from broker.settings import Settings
from tests.observability.conftest import MONITORING
from tests.test_manifests import INGRESS, render


def rendered(tmp_path: Path) -> list[dict]:
    ingress = os.path.relpath(INGRESS, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "sdbroker",
        "resources": [f"{ingress}/base"],
        "components": [f"{ingress}/components/monitoring"],
    }))  # fmt: skip
    return render(tmp_path)


def test_monitoring_component_scrapes_the_broker(tmp_path: Path) -> None:
    objects = rendered(tmp_path)
    by_kind = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    broker = by_kind[("Deployment", "sdbroker")]
    pod_labels = broker["spec"]["template"]["metadata"]["labels"]
    container = broker["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    service = by_kind[("Service", "sdbroker")]

    pod_monitoring = by_kind[("PodMonitoring", "sdbroker")]
    assert pod_monitoring["metadata"]["namespace"] == "sdbroker"
    selector = pod_monitoring["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    endpoint = pod_monitoring["spec"]["endpoints"][0]
    assert ports[endpoint["port"]] == int(env["SDB_PORT"])
    assert endpoint["path"] == "/_broker/metrics"

    monitor = by_kind[("ServiceMonitor", "sdbroker")]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/_broker/metrics"

    # The scraper is let in without a login: a value the broker's settings accept.
    assert Settings(metrics_cidrs=env["SDB_METRICS_CIDRS"]).may_scrape_metrics("10.4.0.7")

    rule = by_kind[("PrometheusRule", "sdbroker")]
    shipped = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert rule["spec"] == shipped["spec"]
    dashboard = by_kind[("ConfigMap", "sdbroker-grafana-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["sdbroker.json"]) == json.loads(
        (MONITORING / "grafana-dashboard.json").read_text()
    )
