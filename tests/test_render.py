"""`sdbroker fleet render`: an Agones Fleet the CRD schema accepts, and nothing that sizes it.

The broker owns the Fleet's replicas (fleet/backends/agones.py): no FleetAutoscaler
and no `spec.replicas` are rendered, so `kubectl apply` never resets the size and no
Buffer policy undoes what the broker set for its queue.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fleet import parse_spec
from fleet.render import RenderError, render
from tests.test_manifests import agones_validator, pod_labels, rendered, selects

SPEC = """\
backend: agones
profiles:
  - name: l4
    min: {min}
    buffer: {buffer}
    max: 8
    agones: {{fleet: sd-l4, namespace: gpu, image: "example/webui:1.0", gpus: 1}}
"""


def spec(min: int = 2, buffer: int | str = 2):
    return parse_spec(
        SPEC.format(min=min, buffer=buffer if isinstance(buffer, int) else f'"{buffer}"')
    )


@pytest.mark.parametrize(("min", "buffer"), [(2, 2), (0, 3), (1, "20%"), (8, 1), (0, 0), (1, 2)])
def test_rendered_fleet_passes_the_schema_and_leaves_its_size_to_the_broker(
    min: int, buffer: int | str
) -> None:
    (fleet,) = render(spec(min, buffer))
    assert fleet["kind"] == "Fleet"
    assert not list(agones_validator("Fleet-agones.dev-v1.json").iter_errors(fleet))
    assert "replicas" not in fleet["spec"]  # a re-apply must not reset what the broker set
    assert fleet["metadata"]["namespace"] == "gpu"
    limits = fleet["spec"]["template"]["spec"]["template"]["spec"]["containers"][0]["resources"][
        "limits"
    ]
    assert limits["nvidia.com/gpu"] == "1"


def test_cli_prints_yaml_or_exits_2(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(SPEC.format(min=0, buffer=0))  # scale to zero: the broker sizes the Fleet
    out = subprocess.run(
        [sys.executable, "-m", "broker", "fleet", "render", str(good)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(out.stdout)]
    assert kinds == ["Fleet"]
    no_image = tmp_path / "no-image.yaml"
    no_image.write_text(SPEC.format(min=0, buffer=1).replace('image: "example/webui:1.0", ', ""))
    out = subprocess.run(
        [sys.executable, "-m", "broker", "fleet", "render", str(no_image)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "agones.image is required" in out.stderr and "Traceback" not in out.stderr


def test_network_policy_labels_are_on_the_pod_template() -> None:
    """Agones makes a GameServer's pod metadata from its pod template only (agones v1.56.0
    GameServer.Pod / podObjectMeta): every policy that isolates WebUIs must select it."""
    (fleet,) = render(spec())
    labels = pod_labels(fleet)  # as Agones labels the pod
    assert labels["app.kubernetes.io/managed-by"] == "sdbroker"
    assert labels["sdbroker.io/profile"] == "l4"
    policies = [d for d in rendered("agones") if d["kind"] == "NetworkPolicy"]
    webui = [p for p in policies if p["metadata"]["name"].startswith("sdbroker-webui")]
    assert len(webui) == 2  # the isolation, and the Agones SDK sidecar's hole
    assert all(selects(p["spec"]["podSelector"], labels) for p in webui)


PODDED = SPEC.replace("gpus: 1}}", "gpus: 1, pod_template: {template}}}")


def test_pod_template_is_merged_into_the_whole_pod_template() -> None:
    """`pod_template` holds raw pod fields, as for the kubernetes backend."""
    text = PODDED.format(
        min=2,
        buffer=2,
        template="{metadata: {labels: {team: vision}}, spec: {imagePullSecrets: [{name: regcred}]}}",
    )
    (fleet,) = render(parse_spec(text))
    pod = fleet["spec"]["template"]["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "vision"
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "sdbroker"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["containers"][0]["image"] == "example/webui:1.0"
    assert not list(agones_validator("Fleet-agones.dev-v1.json").iter_errors(fleet))


def test_pod_fields_outside_metadata_and_spec_are_refused() -> None:
    text = PODDED.format(min=2, buffer=2, template="{imagePullSecrets: [{name: regcred}]}")
    with pytest.raises(RenderError, match=r"pod_template.*imagePullSecrets"):
        render(parse_spec(text))


def test_gameservers_carry_the_hash_of_their_template() -> None:
    """Each GameServer says which template made it, as plain pods do; a new image is a new
    hash (Agones then rolls the Fleet), a re-render of the same file the same one."""
    label = "sdbroker.io/template"
    (fleet,) = render(spec())
    (again,) = render(spec())
    (other,) = render(parse_spec(SPEC.format(min=2, buffer=2).replace(":1", ":2")))
    hashes = [f["spec"]["template"]["metadata"]["labels"].get(label) for f in (fleet, again, other)]
    assert hashes[0] and hashes[0] == hashes[1] != hashes[2]
    assert not list(agones_validator("Fleet-agones.dev-v1.json").iter_errors(other))
