"""Metadata for a machine that is not a Kubernetes node: this machine as the one local endpoint.

Without ``--inventory`` or ``--kubeconfig``, ``kubenetmon up`` describes this machine to the enricher as a
one-pod cluster. The labeling rules drop *node flows* (source IP is an address of a Node), so the
machine's addresses must not belong to the Node: the inventory lists a Node with no addresses and a Pod
``host/<hostname>`` on that Node holding every address of the metered namespace. The machine's traffic
is then "from pod on node" or "to pod on node" like any pod's, and its peers get a class (private
ranges ``INTRA_VPC``, the internet ``PUBLIC_INTERNET``, cloud services by the range files).

Pure except ``addresses()``, which asks ``ip`` for the namespace's addresses.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterable
from typing import Any, Final

NAMESPACE: Final = "host"


def addresses(*, netns: str = "") -> list[str]:
    """Every address of every interface but loopback, IPv4 and IPv6, in the namespace (``ip -j addr``)."""
    command = ["ip", "-j", "addr", "show"] if not netns else ["ip", "-n", netns, "-j", "addr", "show"]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        return []
    found = []
    for link in json.loads(proc.stdout or "[]"):
        for info in link.get("addr_info") or ():
            text = str(info.get("local") or "")
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                continue
            if not addr.is_loopback:
                found.append(str(addr))
    return list(dict.fromkeys(found))


def host_inventory(*, node: str, hostname: str, ips: Iterable[str]) -> dict[str, Any]:
    """A Kubernetes ``List``: Node ``node`` (no addresses) and Pod ``host/<hostname>`` holding ``ips``."""
    ips = list(ips)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": hostname,
            "namespace": NAMESPACE,
            "uid": f"kubenetmon-up-host-{hostname}",
            "labels": {"app": hostname},
        },
        "spec": {"nodeName": node},
        "status": {"phase": "Running", "podIP": ips[0] if ips else "", "podIPs": [{"ip": ip} for ip in ips]},
    }
    # No status.addresses: an address of the Node would make every flow of this machine a node flow.
    node_obj = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}, "status": {}}
    return {"apiVersion": "v1", "kind": "List", "items": [node_obj, pod]}


def dump(inventory: dict[str, Any]) -> str:
    """JSON text (the enricher reads JSON or YAML ``List``s alike)."""
    return json.dumps(inventory, indent=2) + "\n"
