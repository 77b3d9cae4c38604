"""`sdbroker`: serve the broker, and work on fleet.yaml files.

Every failure an admin can cause (bad settings, bad YAML) is one clear message
and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import socket
import sys
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import TYPE_CHECKING

import psutil
from pydantic import ValidationError

from fleet import BackendError, FleetSpec, SpecError, isolation_of, load_spec

from .version import VERSION

if TYPE_CHECKING:
    from .settings import Settings

EXIT_USAGE = 2
LOOPBACK_V4, LOOPBACK_V6 = ip_network("127.0.0.0/8"), ip_network("::1/128")


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return EXIT_USAGE


def load_settings():
    from .settings import Settings, unknown_variables

    unknown = unknown_variables(os.environ)
    if unknown:
        raise SystemExit(_fail("\n".join(unknown)))
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = "SDB_" + "_".join(str(p) for p in err["loc"][:1]).upper()
            lines.append(f"{field}: {err['msg']}")
        raise SystemExit(_fail("\n".join(lines))) from None


def raise_fd_limit() -> None:
    """Every proxied WebSocket holds two sockets: lift the soft limit (1024 under systemd) to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def freeze_heap(app: object) -> None:
    """Leave everything built at start-up (modules, templates, the app) out of
    future garbage collections: a full collection then scans only what requests
    made, which keeps its pauses off the proxy's tail latency."""
    gc.collect()
    gc.freeze()


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .app import build_app
    from .logs import AccessLogger, configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    if settings.auth == "dev" and not settings.host_is_loopback:
        return _fail(
            f"SDB_AUTH=dev lets anyone log in as anyone, so it only binds to loopback; "
            f"SDB_HOST={settings.host} is not. Use SDB_AUTH=header, iap or oidc."
        )
    if not settings.fleet.exists():
        return _fail(f"SDB_FLEET: {settings.fleet}: no such file (the repo ships fleet.local.yaml)")
    try:
        spec = load_spec(settings.fleet)
    except SpecError as exc:
        return _fail(str(exc))
    problem = _isolation_problem(settings, spec, announce=not args.worker)
    if problem:
        return _fail(problem)
    problem = None if args.worker else _layout_problem(settings)  # the supervisor checked
    if problem:
        return _fail(problem)
    # The broker's files (secret, Redis, records, logs) are its own: a WebUI, even one
    # with a uid of its own, reads none of them.
    os.umask(0o077)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    raise_fd_limit()
    serving = f"sdbroker: serving on http://{settings.host}:{settings.port} ({settings.auth} login"
    if settings.worker_count > 1:
        from .workers import supervise

        return supervise(settings, spec, banner=f"{serving}, {settings.worker_count} workers)")
    app = build_app(settings, spec)
    app.on_startup.append(freeze_heap)  # after the cleanup contexts: the app is up

    def announce(_aiohttp_banner: str) -> None:
        # aiohttp calls this once the socket is bound. A worker of a supervisor
        # stays quiet: the supervisor said it once for all of them.
        if not args.worker:
            print(f"{serving})", flush=True)

    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        access_log=logging.getLogger("aiohttp.access") if settings.access_logged else None,
        access_log_class=AccessLogger,
        print=announce,
        shutdown_timeout=settings.drain_timeout,
        keepalive_timeout=settings.client_timeout,  # from connect too: bounds slowloris heads
        reuse_port=True,
    )
    return 0


def _isolation_problem(settings: Settings, spec: FleetSpec, *, announce: bool) -> str | None:
    """Why this broker must not start with these WebUIs, if it must not; `announce`:
    log what isolation each profile gets (once: the supervisor, not each worker)."""
    try:
        isolation = isolation_of(spec, settings.data_dir.resolve())
    except BackendError as exc:
        return f"{settings.fleet}: {exc}"
    exposed = [name for name, i in isolation.items() if i.sandbox is None]
    ours = _own_networks(settings.trusted_proxies) if settings.auth == "header" else []
    if ours and exposed:
        return (
            f"SDB_TRUSTED_PROXIES: {ours[0]} holds an address of this machine, which the "
            f"WebUIs of profile {', '.join(exposed)} can connect from (they run in the "
            "broker's network: install bubblewrap, or isolation is none): any of them could "
            "send X-Forwarded-User and act as anyone. Sandbox them, or trust only a proxy "
            "on another machine."
        )
    for name, found in isolation.items() if announce else ():
        local = spec.profile(name).local  # isolation_of lists local profiles only
        chosen = local is not None and local.isolation == "none"
        level = logging.INFO if found.complete or chosen else logging.WARNING
        logging.getLogger("broker").log(
            level, "profile %s: WebUI isolation: %s", name, found.describe()
        )
    return None


def _own_networks(trusted: Sequence[IPv4Network | IPv6Network]) -> list[str]:
    """The trusted networks holding an address of this machine. An unsandboxed WebUI
    can connect from any of them: any 127.x (not only 127.0.0.1), ::1, and every
    interface's own address (it may bind one as its source)."""
    own = [ip_address(a.address.split("%")[0]) for addrs in psutil.net_if_addrs().values()
           for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)]  # fmt: skip
    return [str(n) for n in trusted
            if n.overlaps(LOOPBACK_V4 if n.version == 4 else LOOPBACK_V6)
            or any(a in n for a in own if a.version == n.version)]  # fmt: skip


def _layout_problem(settings: Settings) -> str | None:
    """Why this broker must not run on the Redis of SDB_REDIS_URL (fleet/schema.py): a
    layout it does not know. An embedded Redis is checked by nobody: it is this
    broker's own, in its data dir."""
    url = settings.redis_url
    if not url:
        return None
    from fleet import LayoutError, connect_redis
    from fleet import ensure_layout as ensure

    async def check() -> None:
        redis = connect_redis(url)
        try:
            await ensure(redis)
        finally:
            await redis.aclose()

    try:
        asyncio.run(check())
    except LayoutError as exc:
        return f"SDB_REDIS_URL: {exc}"
    except Exception as exc:
        logging.getLogger("broker").warning("Redis layout not checked at start: %s", exc)
    return None


def cmd_layout(args: argparse.Namespace) -> int:
    """`sdbroker layout [--finalize]`: the Redis layout, and this broker's."""
    from fleet import LAYOUT, LayoutError, connect_redis
    from fleet import OLDEST_LAYOUT as OLDEST
    from fleet import ensure_layout as ensure
    from fleet import finalize_layout as finalize

    from .fleetcli import CliError, redis_url

    settings = load_settings()

    async def run() -> str:
        redis = connect_redis(redis_url(settings))
        try:
            if args.finalize:
                before, after = await finalize(redis)
                return f"Redis layout {before} -> {after}"
            stored = await ensure(redis)
            return f"Redis layout {stored}; this broker: {LAYOUT} (runs on {OLDEST} to {LAYOUT})"
        finally:
            await redis.aclose()

    try:
        print(asyncio.run(run()))
    except (CliError, LayoutError) as exc:
        return _fail(str(exc))
    except Exception as exc:
        return _fail(f"cannot reach Redis: {exc}")
    return 0


def cmd_fleet_validate(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        try:
            spec = load_spec(path)
        except SpecError as exc:
            print(exc, file=sys.stderr)
            status = EXIT_USAGE
            continue
        names = ", ".join(p.name for p in spec.profiles)
        print(f"{path}: ok ({spec.backend} backend; profiles: {names})")
    return status


def cmd_reap(args: argparse.Namespace) -> int:
    """`sdbroker reap --once [--dry-run]`: the very code of `python -m reaper`."""
    from reaper import main as reap_main

    argv = ["--once"] if args.once else []
    return reap_main(argv + (["--dry-run"] if args.dry_run else []), prog="sdbroker reap")


def cmd_fleet_render(args: argparse.Namespace) -> int:
    import yaml

    from fleet import RenderError
    from fleet import render_fleet as render

    try:
        docs = render(load_spec(args.file))
    except SpecError as exc:
        return _fail(str(exc))
    except RenderError as exc:
        return _fail(f"{args.file}: {exc}")
    print(f"# generated by: sdbroker fleet render {args.file}")
    print("# Do not edit: change the fleet file and render again.")
    print(yaml.safe_dump_all(docs, sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdbroker", description="Per-user Stable Diffusion WebUI broker."
    )
    parser.add_argument("--version", action="version", version=f"sdbroker {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the broker (settings from SDB_* variables)")
    # --worker: started by the SDB_WORKERS supervisor (broker/workers.py), not by people.
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)
    fleet = sub.add_parser("fleet", help="work on fleet.yaml files").add_subparsers(
        dest="fleet_command", required=True
    )
    validate = fleet.add_parser("validate", help="check fleet.yaml files; exit 2 on errors")
    validate.add_argument("files", nargs="+")
    validate.set_defaults(func=cmd_fleet_validate)
    render = fleet.add_parser(
        "render", help="print the Agones Fleet of an agones fleet file (the broker sizes it)"
    )
    render.add_argument("file")
    render.set_defaults(func=cmd_fleet_render)
    from .fleetcli import add_commands  # diff, apply, status: they talk to Redis

    add_commands(fleet, load_settings)
    layout = sub.add_parser("layout", help="show the Redis layout version (see docs/operations.md)")
    layout.add_argument(
        "--finalize", action="store_true", help="store this broker's layout (every broker runs it)"
    )
    layout.set_defaults(func=cmd_layout)
    reap = sub.add_parser("reap", help="reclaim idle WebUIs: one cycle, one JSON line")
    reap.add_argument("--once", action="store_true", help="run one cycle and exit (required)")
    reap.add_argument("--dry-run", action="store_true", help="report; change nothing")
    reap.set_defaults(func=cmd_reap)
    from .sessionscli import add_commands as add_session_commands  # sessions, user outputs

    add_session_commands(sub, load_settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
