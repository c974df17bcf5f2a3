"""``pulse``: the command line (dev, api, worker, migrate, tenants, dlq)."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Sequence

import asyncpg

from pulse.channels.registry import check_channel_settings
from pulse.cli.ports import PortInUse
from pulse.config import Settings, load_settings
from pulse.core.errors import ConfigError
from pulse.logs import configure as configure_logging
from pulse.tracing import configure as configure_tracing


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        check_channel_settings(settings)
    except ConfigError as exc:
        print(f"pulse: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    configure_tracing(os.environ)
    try:
        code: int = args.command(settings, args)
    except ConfigError as exc:
        print(f"pulse: configuration error: {exc}", file=sys.stderr)
        return 2
    except PortInUse as exc:
        print(f"pulse: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if not isinstance(exc, unreachable()):
            raise
        # at start-up: one line, not a traceback (and no URL: no password)
        print(
            f"pulse: cannot reach a server it needs: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 1
    return code


def unreachable() -> tuple[type[BaseException], ...]:
    """What a server that is down, unknown or refusing Pulse raises while a command starts
    (redis is imported here, not at start: it loads OpenTelemetry whenever that is installed)."""
    import redis.exceptions

    return (
        ConnectionError,
        TimeoutError,
        socket.gaierror,
        asyncpg.CannotConnectNowError,
        asyncpg.InvalidCatalogNameError,
        asyncpg.InvalidAuthorizationSpecificationError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pulse", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    sub.add_parser("dev", help="migrations, API, worker (and Redis, PostgreSQL, SMTP sink)")
    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument(
        "--processes", type=int, metavar="N", help="API processes on the port (PULSE_API_PROCESSES)"
    )
    # a supervisor's child: binds with SO_REUSEPORT on the port its supervisor holds
    api.add_argument("--shared-port", action="store_true", help=argparse.SUPPRESS)
    worker = sub.add_parser("worker", help="run a worker process")
    worker.add_argument(
        "--tasks", default=None, metavar="MODULES",
        help="serve the user tasks of these comma-separated modules (or PULSE_TASKS)",
    )  # fmt: skip
    worker.add_argument(
        "--no-channels", action="store_true", help="serve tasks only, no notification channel"
    )
    sub.add_parser("migrate", help="apply pending SQL migrations")
    tenants = sub.add_parser("tenants", help="manage tenants")
    tenants_sub = tenants.add_subparsers(required=True, metavar="ACTION")
    create = tenants_sub.add_parser("create", help="create a tenant and print its API key")
    create.add_argument("name")
    create.add_argument(
        "--operator", action="store_true", help="its admin keys may create other tenants"
    )
    for name, handler in (
        ("dev", _dev),
        ("api", _api),
        ("worker", _worker),
        ("migrate", _migrate),
    ):
        sub.choices[name].set_defaults(command=handler)
    create.set_defaults(command=_tenants_create)
    from pulse.cli.dlq import add_parser as add_dlq

    add_dlq(sub)
    return parser


def _dev(settings: Settings, args: argparse.Namespace) -> int:
    from pulse.cli.dev import run_dev
    from pulse.devtools.embedded import EmbeddedServerError

    try:
        return run_dev(settings)
    except EmbeddedServerError as exc:
        print(f"pulse dev: {exc}", file=sys.stderr)
        return 1


def _api(settings: Settings, args: argparse.Namespace) -> int:
    processes = settings.api_processes if args.processes is None else args.processes
    if processes < 1:
        raise ConfigError("--processes must be at least 1")
    if processes > 1:
        from pulse.cli.prefork import supervise

        return supervise(processes, settings.http_host, settings.http_port)
    from pulse.cli.serve import run, serve_api

    run(lambda: serve_api(settings, reuse_port=args.shared_port))
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from pulse.cli.serve import run, serve_worker
    from pulse.runtime.task_host import TaskModuleError, load_registries

    modules = args.tasks if args.tasks is not None else settings.tasks
    try:
        registries = load_registries(modules)
    except TaskModuleError as exc:
        print(f"pulse worker: {exc}", file=sys.stderr)
        return 2
    if args.no_channels and not registries:
        print("pulse worker: --no-channels needs --tasks", file=sys.stderr)
        return 2
    from pulse.runtime.task_schedules import check_settings

    try:
        check_settings(settings, registries)  # cron jobs need a tenant: say so before starting
    except ValueError as exc:
        print(f"pulse worker: {exc}", file=sys.stderr)
        return 2
    try:
        run(lambda: serve_worker(settings, tasks=registries, serve_channels=not args.no_channels))
    except asyncio.CancelledError:
        print("pulse worker: stopped at once; unfinished work stays pending", file=sys.stderr)
        return 1
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from pulse.store.migrations import migrate_database

    applied = asyncio.run(migrate_database(settings.require_database_url()))
    print(f"applied migrations: {applied}" if applied else "migrations are current")
    return 0


def _tenants_create(settings: Settings, args: argparse.Namespace) -> int:
    from pulse.store.pool import create_pool
    from pulse.store.tenants import NewTenant, TenantStore

    async def create() -> NewTenant:
        pool = await create_pool(settings.require_database_url(), 1, 1)
        try:
            return await TenantStore(pool).create(args.name, operator=args.operator)
        finally:
            await pool.close()

    try:
        tenant = asyncio.run(create())
    except asyncpg.UniqueViolationError:
        print(f"pulse: a tenant named {args.name!r} exists already", file=sys.stderr)
        return 1
    print(f"tenant {tenant.name} ({tenant.tenant_id})")
    print(f"api key: {tenant.api_key}")
    print("the key is shown once; Pulse stores only its SHA-256 digest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
