"""A kubectl exec credential plugin for the simulator: `python execplugin.py URL TTL`.

Prints an ExecCredential (client.authentication.k8s.io/v1) with a token that
the simulator at URL accepts for TTL seconds. Standard library only: kubectl
and kubernetes_asyncio run it as a plain subprocess.
"""

from __future__ import annotations

import json
import sys
import urllib.request


def main() -> None:
    url, ttl = sys.argv[1], float(sys.argv[2])
    request = urllib.request.Request(
        f"{url}/_sim/issue_token",
        data=json.dumps({"ttl": ttl}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        status = json.load(answer)["result"]
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": status,
    }
    print(json.dumps(credential))


if __name__ == "__main__":
    main()
