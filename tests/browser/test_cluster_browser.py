"""A browser lands in a WebUI served by a pod of the simulated Kubernetes cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.browser.test_two_users import log_in
from tests.kubeapi import KubeSimThread, ProcessRunner
from tests.support.procs import STUB, wait_for

pytestmark = pytest.mark.browser

FLEET = """\
backend: kubernetes
profiles:
  - name: default
    buffer: 1
    max: 2
    kubernetes:
      namespace: sd
      image: example/sd-webui:test
      gpus: 1
      volumes: {models: null, outputs: null}
"""


def test_browser_uses_a_webui_on_a_cluster_pod(brokers, tmp_path: Path, browser: Browser) -> None:
    runner = ProcessRunner(
        ["{python}", str(STUB), "--host", "{ip}", "--port", "{port}", "--pod-id", "{name}",
         "--delay", "0.3", "--outdir", str(tmp_path / "pod-outputs" / "{name}")],
        ready_path="/internal/ping",
    )  # fmt: skip
    with KubeSimThread(nodes=2, gpus_per_node=1, process_runner=runner, seed=3) as thread:
        kubeconfig = thread.sim.write_kubeconfig(tmp_path / "kubeconfig", namespace="sd")
        fleet = tmp_path / "fleet.yaml"
        fleet.write_text(FLEET)
        broker = brokers(fleet=fleet, SDB_AUTH="dev", KUBECONFIG=str(kubeconfig))
        wait_for(
            lambda: any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for p in thread.call(lambda sim: sim.pods("sd"))
                for c in (p.get("status") or {}).get("conditions") or []
            ),
            30,
            what="a Ready pod in the simulated cluster",
        )
        page = log_in(browser, broker.url, "alice")
        pod = page.inner_text("#pod-id")
        names = {p["metadata"]["name"] for p in thread.call(lambda sim: sim.pods("sd"))}
        assert pod in names
        labels = thread.call(lambda sim: sim.pod("sd", pod))["metadata"]["labels"]
        assert labels["sdbroker.io/state"] == "claimed"
        page.fill("#prompt", "a lighthouse at dusk")
        page.click("#generate")
        page.wait_for_selector("body[data-state=done]", timeout=30_000)
        assert page.inner_text("#saved-path").strip()
