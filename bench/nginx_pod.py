"""A fast static "pod" for the proxy and download benchmarks: nginx in the foreground.

The broker's local backend starts this as a pod's command; it writes an nginx
config for `--port` and becomes nginx (exec, so the pod's pid is nginx's
master and SIGTERM to the group stops it). nginx serves the files under
`--root` and answers the probe (`/internal/ping`) and the claim-time outputs
call (`/sdapi/v1/options`) with `{}`. Without nginx it execs tiny_pod.py,
which serves the same files far more slowly.

    python bench/nginx_pod.py --port 7860 --root DIR [--nginx PATH] [--workers auto] [--tmp-base DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

CONFIG = """\
worker_processes {workers};
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location = /internal/ping {{ default_type application/json; return 200 '{{}}'; }}
        location = /sdapi/v1/options {{ default_type application/json; return 200 '{{}}'; }}
    }}
}}
"""


def nginx_config(port: int, root: Path, tmp: Path, workers: str) -> str:
    return CONFIG.format(port=port, root=root, tmp=tmp, workers=workers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    parser.add_argument("--workers", default="auto")
    parser.add_argument("--tmp-base", type=Path, default=None, help="where nginx's own files go")
    parser.add_argument("--pod-id", default="")
    args = parser.parse_args(argv)
    if not os.path.exists(args.nginx):
        tiny = Path(__file__).with_name("tiny_pod.py")
        argv = [sys.executable, "-S", str(tiny), "--port", str(args.port), "--pod-id", args.pod_id,
                "--root", str(args.root)]  # fmt: skip
        os.execv(sys.executable, argv)
    if args.tmp_base is not None:
        args.tmp_base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="nginx-", dir=args.tmp_base))
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_config(args.port, args.root.resolve(), tmp, args.workers))
    sys.stdout.flush()
    os.execv(args.nginx, [args.nginx, "-p", str(tmp), "-e", "stderr", "-c", str(conf)])


if __name__ == "__main__":
    main()
