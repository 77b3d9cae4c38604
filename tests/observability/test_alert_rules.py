"""The shipped alert rules are valid Prometheus rules and fire when, and only when, meant to
(`promtool test rules` with ingress/components/monitoring/alerts.test.yaml)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.observability.conftest import MONITORING, alert_rules, write_rules

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_rules_pass_promtool_check_and_unit_tests(promtool: str, tmp_path: Path) -> None:
    write_rules(tmp_path)
    shutil.copy(MONITORING / "alerts.test.yaml", tmp_path)
    check = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run([promtool, "test", "rules", "alerts.test.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert "SUCCESS" in unit.stdout


def test_unit_tests_catch_a_wrong_rule(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: summing a fleet gauge over replicas (a classic mistake:
    every replica reports the same number) doubles the deaths and breaks them."""
    rules = (MONITORING / "prometheusrule.yaml").read_text()
    broken = rules.replace(
        'max by (profile) (increase(sdbroker_sessions_ended_total{reason="dead"}',
        'sum by (profile) (increase(sdbroker_sessions_ended_total{reason="dead"}',
    )
    assert broken != rules
    import yaml

    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(yaml.safe_load(broken)["spec"]))
    shutil.copy(MONITORING / "alerts.test.yaml", tmp_path)
    unit = subprocess.run([promtool, "test", "rules", "alerts.test.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert unit.returncode != 0 and "SdbrokerPodsDying" in unit.stdout + unit.stderr


def test_every_metric_in_operations_md_has_an_alert_or_says_none() -> None:
    """Each row of the metrics table with an "alert when" has a rule on that metric."""
    exprs = " ".join(r["expr"] for g in alert_rules()["groups"] for r in g["rules"])
    missing = []
    for line in OPERATIONS.read_text().splitlines():
        row = re.match(r"\| `(sdbroker_\w+)` \|.*\| ([^|]*) \|$", line)
        if row and row.group(2).strip():
            name = row.group(1).removesuffix("_total")
            if name not in exprs:
                missing.append(row.group(1))
    assert not missing, f"operations.md says to alert on these, no rule does: {missing}"
