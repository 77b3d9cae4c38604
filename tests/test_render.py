"""`sdbroker fleet render`: Agones objects that both the CRD schema and the webhook accept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fleet import parse_spec
from fleet.render import RenderError, render
from tests.test_manifests import agones_validator, buffer_policy_problems

SPEC = """\
backend: agones
profiles:
  - name: l4
    min: {min}
    buffer: {buffer}
    max: 8
    agones: {{fleet: sd-l4, namespace: gpu, image: "example/webui:1.0", gpus: 1}}
"""


def spec(min: int = 2, buffer: int | str = 2):  # noqa: ANN201
    return parse_spec(
        SPEC.format(min=min, buffer=buffer if isinstance(buffer, int) else f'"{buffer}"')
    )


@pytest.mark.parametrize(("min", "buffer"), [(2, 2), (0, 3), (1, "20%"), (8, 1)])
def test_rendered_objects_pass_schema_and_webhook_rules(min: int, buffer: int | str) -> None:
    fleet, autoscaler = render(spec(min, buffer))
    assert not list(agones_validator("Fleet-agones.dev-v1.json").iter_errors(fleet))
    assert not list(
        agones_validator("FleetAutoscaler-autoscaling.agones.dev-v1.json").iter_errors(autoscaler)
    )
    assert not buffer_policy_problems(autoscaler["spec"]["policy"]["buffer"])
    assert fleet["metadata"]["namespace"] == "gpu"
    limits = fleet["spec"]["template"]["spec"]["template"]["spec"]["containers"][0]["resources"][
        "limits"
    ]
    assert limits["nvidia.com/gpu"] == "1"


def test_buffer_zero_is_refused_plainly() -> None:
    with pytest.raises(RenderError, match="cannot scale to zero"):
        render(spec(0, 0))


@pytest.mark.parametrize(
    ("min", "buffer", "words"), [(1, 2, "at least buffer"), (0, "20%", "min >= 1")]
)
def test_webhook_rules_are_checked(min: int, buffer: int | str, words: str) -> None:
    with pytest.raises(RenderError, match=words):
        render(spec(min, buffer))


def test_cli_prints_yaml_or_exits_2(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(SPEC.format(min=2, buffer=2))
    out = subprocess.run(
        [sys.executable, "-m", "broker", "fleet", "render", str(good)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(out.stdout)]
    assert kinds == ["Fleet", "FleetAutoscaler"]
    zero = tmp_path / "zero.yaml"
    zero.write_text(SPEC.format(min=0, buffer=0))
    out = subprocess.run(
        [sys.executable, "-m", "broker", "fleet", "render", str(zero)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "cannot scale to zero" in out.stderr and "Traceback" not in out.stderr
