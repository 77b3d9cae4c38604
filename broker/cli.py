"""`sdbroker`: serve the broker, and work on fleet.yaml files.

Every failure an admin can cause (bad settings, bad YAML) is one clear message
and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from fleet import SpecError, load_spec

EXIT_USAGE = 2


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return EXIT_USAGE


def load_settings():  # noqa: ANN201 - returns broker.settings.Settings
    from .settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = "SDB_" + "_".join(str(p) for p in err["loc"][:1]).upper()
            lines.append(f"{field}: {err['msg']}")
        raise SystemExit(_fail("\n".join(lines))) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .app import build_app

    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    app = build_app(settings, spec)
    print(
        f"sdbroker: serving on http://{settings.host}:{settings.port} ({settings.auth} login)",
        flush=True,
    )
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        print=None,
        shutdown_timeout=10,
        reuse_port=True,
    )
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdbroker", description="Per-user Stable Diffusion WebUI broker."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the broker (settings from SDB_* variables)")
    serve.set_defaults(func=cmd_serve)
    fleet = sub.add_parser("fleet", help="work on fleet.yaml files").add_subparsers(
        dest="fleet_command", required=True
    )
    validate = fleet.add_parser("validate", help="check fleet.yaml files; exit 2 on errors")
    validate.add_argument("files", nargs="+")
    validate.set_defaults(func=cmd_fleet_validate)
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
