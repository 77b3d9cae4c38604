"""A GameServer's address, addresses and ports, as Agones v1.56.0 writes them.

Ported from agones v1.56.0 `pkg/gameservers/gameservers.go`, `address()` and
`applyGameServerAddressAndPort`, and `pkg/apis/agones/v1/gameserver.go`,
`GameServerPort.Status()`:

- `status.address` is the NODE's address: its ExternalDNS, else ExternalIP,
  else InternalDNS, else InternalIP. Never the pod's.
- `status.addresses` is the node's addresses, then one `PodIP` entry per pod IP
  (`pod.status.podIPs`: two on a dual-stack cluster, the first the primary).
- `status.ports[i].port` is the port's hostPort, or its containerPort under
  `portPolicy: None` (which has no hostPort: nothing listens on the node).

The simulator used to write the pod IP into `status.address`, which hid a
backend that dialled the node: on a cluster it reached nothing.
"""

from __future__ import annotations

import ipaddress
from typing import Any

POD_IP = "PodIP"  # agonesv1.NodePodIP
# address(): the first of these found wins; the IP kinds only with a parseable IP.
_PRIMARY = (
    ("ExternalDNS", False),
    ("ExternalIP", True),
    ("InternalDNS", False),
    ("InternalIP", True),
)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def node_address(node: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """`address(node)`: the primary address and a copy of all the node's addresses."""
    addresses = [dict(a) for a in (node.get("status") or {}).get("addresses") or []]
    for kind, must_be_ip in _PRIMARY:
        for a in addresses:
            if a.get("type") == kind and (not must_be_ip or _is_ip(a.get("address", ""))):
                return a["address"], addresses
    name = (node.get("metadata") or {}).get("name", "")
    raise LookupError(f"Could not find an address for Node: {name}")


def status_port(port: dict[str, Any]) -> dict[str, Any]:
    """`GameServerPort.Status()` (the PortPolicyNone feature is on by default in 1.56)."""
    if port.get("portPolicy") == "None":
        return {"name": port.get("name", ""), "port": int(port.get("containerPort") or 0)}
    return {"name": port.get("name", ""), "port": int(port.get("hostPort") or 0)}


def apply_address_and_port(
    status: dict[str, Any], spec: dict[str, Any], node: dict[str, Any], pod: dict[str, Any]
) -> None:
    """`applyGameServerAddressAndPort`: write the node's and pod's addresses and the ports."""
    address, addresses = node_address(node)
    status["address"] = address
    status["addresses"] = addresses + [
        {"type": POD_IP, "address": ip["ip"]}
        for ip in (pod.get("status") or {}).get("podIPs") or []
    ]
    status["nodeName"] = (pod.get("spec") or {}).get("nodeName", "")
    status["ports"] = [status_port(p) for p in spec.get("ports") or []]


def gameserver_pod_ports(spec: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The container ports `GameServer.Pod()` appends, by container name: each port's
    containerPort and protocol, with its hostPort unless the policy is None."""
    by_container: dict[str, list[dict[str, Any]]] = {}
    for p in spec.get("ports") or []:
        port: dict[str, Any] = {
            "containerPort": int(p.get("containerPort") or 0),
            "protocol": p.get("protocol") or "UDP",
        }
        if p.get("portPolicy") != "None" and p.get("hostPort"):
            port["hostPort"] = int(p["hostPort"])
        by_container.setdefault(p.get("container") or spec.get("container", ""), []).append(port)
    return by_container
