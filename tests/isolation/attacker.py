"""A bare hostile WebUI (standard library only): POST /attack runs attacks.py.

For the sandbox of a broker that is not root, driven directly by the test
with an interpreter any uid may run.

    python3 attacker.py PORT
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attacks import attacks


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        targets = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps(attacks(targets)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
