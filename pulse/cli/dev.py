"""``pulse dev``: everything in one process for a laptop.

Starts embedded Redis and PostgreSQL when no URLs are configured, and a local SMTP sink when no
SMTP server is configured; applies migrations; makes sure a development tenant exists; then runs
the API and a worker until Ctrl-C (or its terminal closes), and stops every server it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shlex
import signal
from pathlib import Path

import msgspec

from pulse.cli.serve import api_site, install_stop_signals, run, run_worker
from pulse.config import Settings
from pulse.http.dashboard import DEV_MAIL, DevInbox
from pulse.metrics import Metrics
from pulse.store.migrations import migrate_database
from pulse.store.pool import create_pool
from pulse.store.tenants import TenantStore, generate_key

logger = logging.getLogger("pulse.cli.dev")
DEV_TENANT = "dev"
EXAMPLE_BODY = {
    "recipient": "someone@example.com",
    "channel": "email",
    "payload": {"subject": "Hello", "body": "Welcome to Pulse"},
    "priority": 1,
}


def run_dev(settings: Settings) -> int:
    data_dir = Path(settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    inbox = None if settings.smtp_host else DevInbox()  # the sink's mails, shown on /dev/mail
    signal.signal(signal.SIGHUP, _hang_up)  # while servers start: as Ctrl-C, they are stopped
    with contextlib.ExitStack() as stack:
        try:
            settings = _with_servers(settings, data_dir, stack)
            settings = _with_smtp_sink(settings, stack, inbox)
            settings = _with_receipt_key(settings, data_dir)
            run(lambda: _dev_main(settings, data_dir, inbox))
        except asyncio.CancelledError:
            logger.warning("stopped at once")
        finally:
            # A terminal closed once hangs up no more, but stopping the servers must not be cut.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return 0


def _hang_up(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _with_servers(settings: Settings, data_dir: Path, stack: contextlib.ExitStack) -> Settings:
    if settings.redis_url and settings.database_url:
        return settings
    from pulse.devtools.embedded import EmbeddedPostgres, EmbeddedRedis

    if not settings.redis_url:
        redis = stack.enter_context(EmbeddedRedis(data_dir / "redis"))
        settings = msgspec.structs.replace(settings, redis_url=redis.url)
        logger.info("embedded Redis at %s", redis.url)
    if not settings.database_url:
        postgres = stack.enter_context(EmbeddedPostgres(data_dir / "postgres"))
        settings = msgspec.structs.replace(settings, database_url=postgres.url)
        logger.info("embedded PostgreSQL at %s", postgres.url)
    return settings


def _with_smtp_sink(
    settings: Settings, stack: contextlib.ExitStack, inbox: DevInbox | None
) -> Settings:
    if settings.smtp_host or inbox is None:
        return settings
    from pulse.devtools.smtp_sink import SmtpSink

    sink = stack.enter_context(SmtpSink(on_message=inbox.record))
    logger.info(
        "SMTP sink on 127.0.0.1:%d: received mails are logged here and on /dev/mail", sink.port
    )
    return msgspec.structs.replace(
        settings, smtp_host="127.0.0.1", smtp_port=sink.port, smtp_tls="none"
    )


def _with_receipt_key(settings: Settings, data_dir: Path) -> Settings:
    """Receipts work out of the box: a signing key kept in the data folder, like the API key."""
    if settings.receipt_signing_key:
        return settings
    key_file = data_dir / "receipt-signing-key"
    key = key_file.read_text().strip() if key_file.exists() else secrets.token_urlsafe(48)
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    return msgspec.structs.replace(settings, receipt_signing_key=key)


async def _dev_main(settings: Settings, data_dir: Path, inbox: DevInbox | None) -> None:
    stop = asyncio.Event()
    install_stop_signals(stop)
    await migrate_database(settings.require_database_url())
    key = await _dev_key(settings, data_dir)
    metrics = Metrics()
    async with api_site(settings, metrics) as runner:
        if inbox is not None:
            runner.app[DEV_MAIL].connect(inbox)
        print(banner(settings, key), flush=True)
        await run_worker(settings, stop, metrics, serve_metrics=False)


async def _dev_key(settings: Settings, data_dir: Path) -> str:
    """The development tenant's key: PULSE_DEV_API_KEY, else one kept in the data folder."""
    key_file = data_dir / "dev-api-key"
    key = settings.dev_api_key
    if not key:
        key = key_file.read_text().strip() if key_file.exists() else generate_key()
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
    pool = await create_pool(settings.require_database_url(), 1, 1)
    try:
        await TenantStore(pool).ensure(DEV_TENANT, key, operator=True)
    finally:
        await pool.close()
    return key


def banner(settings: Settings, key: str) -> str:
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
    base = f"http://{host}:{settings.http_port}"
    body = msgspec.json.encode(EXAMPLE_BODY).decode()
    curl = (
        f"curl -sS -i {base}/api/notifications/ -H {shlex.quote('Authorization: Bearer ' + key)}"
        f" -H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )
    return "\n".join(
        [
            "",
            f"Pulse is running on {base}",
            f"API key of tenant '{DEV_TENANT}': {key}",
            "Paste into your shell, and the README's curls work as written:",
            f"export PULSE_KEY={shlex.quote(key)}",
            f"Dashboard: {base}/dashboard (paste the key); mail sent: {base}/dev/mail",
            "Send the example notification:",
            curl,
            "",
        ]
    )
