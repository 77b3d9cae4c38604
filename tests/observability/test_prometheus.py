"""A real Prometheus scrapes a real broker (two workers) and is asked every query of the
shipped Grafana dashboard and every alert expression: each dashboard query returns series,
each alert expression evaluates and names only metrics that exist. A query that names a
metric nobody exports returns nothing, and fails here."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from tests.observability.conftest import MONITORING, alert_rules, write_rules
from tests.support.procs import Broker, free_port, wait_for

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
SCRAPE = "1s"
RATE_WINDOW = "15s"  # for Grafana's $__rate_interval: a few scrapes
# Metric names in PromQL: an identifier that is not a function, keyword or label name.
NAME = re.compile(r"(?<![\w\"'])([a-z_][a-z0-9_]*)\b(?!\s*[(=!~]|\s+(?:by|without)\b)")
NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
               "unless", "bool", "offset", "le", "profile", "state", "source", "reason",
               "status", "code", "component", "instance", "job", "version", "kind", "bound"}  # fmt: skip


def dashboard_queries() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def alert_exprs() -> dict[str, str]:
    return {r["alert"]: r["expr"] for g in alert_rules()["groups"] for r in g["rules"]}


def metric_names(expr: str) -> set[str]:
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)  # matchers, ranges, strings
    return {n for n in NAME.findall(bare) if n not in NOT_METRICS and not n.isdigit()}


class Prometheus:
    def __init__(self, binary: str, directory: Path, target: str, rules: Path) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
            "rule_files": [str(rules)],
            "scrape_configs": [{
                "job_name": "sdbroker",
                "metrics_path": "/_broker/metrics",
                "static_configs": [{"targets": [target]}],
            }],
        }  # fmt: skip
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = directory / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={directory / 'prometheus.yml'}",
                 f"--storage.tsdb.path={directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def query(self, expr: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:  # a bad query: 400 with Prometheus' error
            return json.load(exc)

    def series(self, expr: str) -> list[dict]:
        answer = self.query(expr)
        assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
        return answer["data"]["result"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def scraped(brokers, prometheus_bin: str, tmp_path: Path) -> Iterator[tuple[Prometheus, Broker]]:
    broker = brokers(
        SDB_AUTH="header",
        SDB_TRUSTED_PROXIES="127.0.0.1/32",
        SDB_METRICS_CIDRS="127.0.0.1/32",
        SDB_WORKERS="2",
        SDB_REAP_INTERVAL="1s",
    )
    # A claim (queued while the fleet warms: a wait is observed), requests proxied.
    wait_for(lambda: _get(broker.url + "/stub/whoami", "ann") == 200, 30, what="ann's WebUI")
    for _ in range(5):
        _get(broker.url + "/stub/whoami", "ann")
    rules = write_rules(tmp_path)
    prometheus = Prometheus(prometheus_bin, tmp_path, f"127.0.0.1:{broker.port}", rules)
    try:
        yield prometheus, broker
    finally:
        prometheus.stop()


def _get(url: str, user: str) -> int:
    req = urllib.request.Request(url, headers={"X-Forwarded-User": user})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_prometheus_answers_every_dashboard_query_and_alert(scraped) -> None:
    prometheus, broker = scraped

    def scraping() -> bool:  # up, and a rate window's worth of samples
        try:
            up = prometheus.series('up{job="sdbroker"} == 1')
            samples = prometheus.series(f'count_over_time(up{{job="sdbroker"}}[{RATE_WINDOW}])')
        except (OSError, KeyError):
            return False
        return bool(up) and bool(samples) and float(samples[0]["value"][1]) >= 4

    wait_for(scraping, 60, interval=0.5, what=f"Prometheus scraping; log: {prometheus.log}")
    _get(broker.url + "/stub/whoami", "ann")  # a request inside the last rate window

    empty = []
    for expr in dashboard_queries():
        if not prometheus.series(expr.replace("$__rate_interval", RATE_WINDOW)):
            empty.append(expr)
    assert not empty, f"dashboard queries with no series: {empty}"

    exported = {s["metric"]["__name__"] for s in prometheus.series('{job="sdbroker"}')}
    unknown = []
    for name, expr in alert_exprs().items():
        prometheus.series(expr)  # valid PromQL that Prometheus evaluates (may rightly be empty)
        missing = {n for n in metric_names(expr) - {"time"} if n not in exported}
        if missing:
            unknown.append(f"{name}: {sorted(missing)}")
    assert not unknown, f"alert expressions naming metrics nobody exports: {unknown}"

    # Every metric docs/operations.md lists is exported (histograms: their _count).
    listed = set(re.findall(r"^\| `(sdbroker_\w+)`", OPERATIONS.read_text(), re.M))
    absent = {n for n in listed if n not in exported and f"{n}_count" not in exported}
    assert len(listed) >= 15 and not absent, f"operations.md lists, nobody exports: {absent}"

    # Prometheus loaded the rules file and evaluates each rule without error.
    with urllib.request.urlopen(
        f"http://127.0.0.1:{prometheus.port}/api/v1/rules", timeout=10
    ) as resp:
        groups = json.load(resp)["data"]["groups"]
    health = {r["name"]: r["health"] for g in groups for r in g["rules"]}
    assert set(health) == set(alert_exprs())
    assert set(health.values()) <= {"ok", "unknown"}, health

    # SDB_WORKERS=2: process_* is the replica's, its supervisor and both workers added up.
    rss = float(prometheus.series('process_resident_memory_bytes{job="sdbroker"}')[0]["value"][1])
    processes = [psutil.Process(broker.proc.pid), *psutil.Process(broker.proc.pid).children()]
    workers = [p for p in processes if "--worker" in p.cmdline()]
    assert len(workers) == 2
    assert rss > max(p.memory_info().rss for p in processes) * 1.5
    # The heartbeats of the controller and the in-broker reaper, from Redis.
    beats = {
        s["metric"]["component"] for s in prometheus.series("sdbroker_heartbeat_timestamp_seconds")
    }
    assert beats == {"controller_leader", "controller_pass", "reaper"}


def test_the_name_check_itself() -> None:
    """metric_names finds metric names, not label names, functions or keywords."""
    expr = alert_exprs()["SdbrokerLongWaits"]
    assert metric_names(expr) == {"sdbroker_wait_seconds_bucket"}
    assert metric_names(
        'time() - max(sdbroker_heartbeat_timestamp_seconds{component="reaper"})'
    ) == {"sdbroker_heartbeat_timestamp_seconds"}
    assert metric_names("max by (profile) (sdbroker_pods) == 0 and max by (profile) (sdbroker_queue_length) > 0") == {
        "sdbroker_pods", "sdbroker_queue_length"
    }  # fmt: skip
