"""Settings: read once at the edge from ``PULSE_*`` variables and an optional ``.env`` file.

The result is a frozen, typed object passed explicitly to whoever needs it; nothing reads the
environment at import time. A bad value stops start-up with a message naming the variable and
the value, and an unknown ``PULSE_*`` variable is refused too, because a typo that silently
falls back to a default is worse than a refusal.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from pulse.core.errors import ConfigError
from pulse.core.limits import Rate, provider_rates
from pulse.core.routes import PROVIDER_NAME

ENV_PREFIX = "PULSE_"
# Variables under these prefixes belong to tools around Pulse (the test suite), not to Pulse.
FOREIGN_PREFIXES = ("PULSE_TEST_", "PULSE_BENCH_")
# ... and these are a client's (the README's `export PULSE_KEY=...` that `make dev` prints, the
# client examples' PULSE_URL): a shell holding them must still run `pulse` commands.
FOREIGN_NAMES = frozenset({"PULSE_KEY", "PULSE_URL"})

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
SECRET_FIELDS = frozenset(
    {
        "smtp_password",
        "dev_api_key",
        "webhook_secret",
        "twilio_auth_token",
        "twilio_webhook_shared_key",
        "receipt_signing_key",
    }
)


# Named providers: one configured account of a provider kind (an SMTP relay, a Twilio account,
# an FCM project), one variable per field: PULSE_PROVIDER_RELAY2__KIND=smtp,
# PULSE_PROVIDER_RELAY2__HOST=..., PULSE_PROVIDER_RELAY2__PASSWORD=... (name ``relay2``;
# underscores in a name become dashes). The flat settings configure each channel's default one.
PROVIDER_PREFIX = "PULSE_PROVIDER_"
# Settings of a channel plugin: PULSE_CHANNEL_<NAME>__<FIELD>, kept as text here and checked
# against the plugin's own settings struct by the channel registry, which knows the plugins.
CHANNEL_PREFIX = "PULSE_CHANNEL_"
# A plugin field whose name ends so is a secret: hidden in messages, scrubbed from what is stored.
SECRET_SUFFIXES = ("password", "token", "secret", "key")
# Names the flat settings and Pulse's own channels already give a provider.
RESERVED_NAMES = frozenset({"smtp", "twilio", "fcm", "webhook", "log", "receipt"})


class _Provider(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fields shared by every kind; ``kind`` is the tag."""


class SmtpProvider(_Provider, frozen=True, tag_field="kind", tag="smtp"):
    host: str
    port: Port = 587
    tls: Literal["none", "starttls", "implicit"] = "starttls"
    username: str | None = None
    password: str | None = None
    sender: str = msgspec.field(default="Pulse <pulse@localhost>", name="from")
    timeout_s: PositiveFloat = 30.0
    ca_file: str | None = None


class TwilioProvider(_Provider, frozen=True, tag_field="kind", tag="twilio"):
    account_sid: str
    auth_token: str
    base_url: str = "https://api.twilio.com"
    sender: str | None = msgspec.field(default=None, name="from")
    messaging_service_sid: str | None = None
    whatsapp_from: str | None = None
    webhook_shared_key: str | None = None  # a Twilio Webhook Setting's key (HMAC-SHA256)


class FcmProvider(_Provider, frozen=True, tag_field="kind", tag="fcm"):
    service_account_file: str
    base_url: str = "https://fcm.googleapis.com"


ProviderConfig = SmtpProvider | TwilioProvider | FcmProvider
SECRET_PROVIDER_FIELDS = frozenset({"password", "auth_token", "webhook_shared_key"})


def provider_env_name(name: str, field: str) -> str:
    return f"{PROVIDER_PREFIX}{name.upper().replace('-', '_')}__{field.upper()}"


def split_provider_variable(variable: str) -> tuple[str, str]:
    """``PULSE_PROVIDER_RELAY2__HOST`` -> ``("relay2", "host")``."""
    rest = variable[len(PROVIDER_PREFIX) :]
    raw_name, sep, field = rest.partition("__")
    name = raw_name.lower().replace("_", "-")
    if not sep or not field or not PROVIDER_NAME.match(name):
        raise ConfigError(
            f"{variable} is not a provider setting: use PULSE_PROVIDER_<NAME>__<FIELD>"
        )
    if name in RESERVED_NAMES:
        raise ConfigError(f"{variable}: {name!r} is the default provider's name; pick another")
    return name, field.lower()


def parse_providers(env: Mapping[str, str]) -> dict[str, ProviderConfig]:
    """Every named provider in ``env``; a bad or missing field stops start-up naming it."""
    fields: dict[str, dict[str, str]] = {}
    for variable, value in env.items():
        if variable.startswith(PROVIDER_PREFIX):
            name, field = split_provider_variable(variable)
            fields.setdefault(name, {})[field] = value
    return {name: _convert(name, raw) for name, raw in sorted(fields.items())}


def _convert(name: str, raw: dict[str, str]) -> ProviderConfig:
    if "kind" not in raw:
        raise ConfigError(f"{provider_env_name(name, 'kind')} is not set: use smtp, twilio or fcm")
    config: ProviderConfig = convert_fields(
        raw,
        ProviderConfig,
        lambda field: provider_env_name(name, field),
        SECRET_PROVIDER_FIELDS,
        needed_by=f"a {raw['kind']} provider",
    )
    return config


def convert_fields(
    raw: Mapping[str, str],
    kind: Any,
    variable: Callable[[str], str],
    secret: Collection[str],
    needed_by: str,
) -> Any:
    """``raw`` (one group of ``PULSE_*__FIELD`` texts) as ``kind``; a bad or missing field stops
    start-up naming its variable, and a secret's value is never shown."""
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        missing = re.search(r"missing required field `(\w+)`", text)
        if missing:
            raise ConfigError(
                f"{variable(missing.group(1))} is not set ({needed_by} needs it)"
            ) from None
        unknown = re.search(r"unknown field `(\w+)`", text)
        if unknown:  # perhaps a misspelt secret: its value is never shown
            raise ConfigError(
                f"{variable(unknown.group(1))} is not a setting of {needed_by}"
            ) from None
        match = re.search(r"at `\$\.(\w+)`", text) or re.search(r"field `(\w+)`", text)
        field = match.group(1) if match else "kind"
        shown = "***" if field in secret else repr(raw.get(field))
        reason = text.split(" - at ")[0]
        raise ConfigError(f"{variable(field)}={shown} is invalid: {reason}") from None


def channel_key(name: str) -> str:
    """A channel's key in ``Settings.channel_settings``: ``my_chan`` and ``my-chan`` are one."""
    return name.lower().replace("_", "-")


def channel_env_name(name: str, field: str) -> str:
    return f"{CHANNEL_PREFIX}{name.upper().replace('-', '_')}__{field.upper()}"


def is_secret_field(field: str) -> bool:
    return field.lower().endswith(SECRET_SUFFIXES)


def parse_channel_settings(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``PULSE_CHANNEL_<NAME>__<FIELD>`` texts by channel; the plugin's struct checks them."""
    found: dict[str, dict[str, str]] = {}
    for variable, value in env.items():
        if not variable.startswith(CHANNEL_PREFIX):
            continue
        raw_name, sep, field = variable[len(CHANNEL_PREFIX) :].partition("__")
        if not sep or not field or not PROVIDER_NAME.match(channel_key(raw_name)):
            raise ConfigError(
                f"{variable} is not a channel setting: use PULSE_CHANNEL_<NAME>__<FIELD>"
            )
        found.setdefault(channel_key(raw_name), {})[field.lower()] = value
    return found


def provider_secrets(providers: Mapping[str, ProviderConfig]) -> list[str]:
    values = []
    for config in providers.values():
        for field in SECRET_PROVIDER_FIELDS:
            value = getattr(config, field, None)
            if isinstance(value, str):
                values.append(value)
    return values


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every knob of Pulse; the field ``http_port`` is set by ``PULSE_HTTP_PORT`` and so on."""

    redis_url: str | None = None
    database_url: str | None = None
    key_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "pulse"
    # Redis Cluster: PULSE_REDIS_URL names any one node; the client finds the others. The queue
    # is split into this many partitions, each under its own hash tag (pulse/queue/keys.py);
    # a job's partition is a hash of its id, or of its tenant's id for per-tenant ordering.
    # API and workers must agree on all three.
    redis_cluster: bool = False
    redis_partitions: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 1
    redis_partition_by: Literal["id", "tenant"] = "id"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one object a line, for log shippers
    data_dir: str = ".pulse"

    http_host: str = "127.0.0.1"
    http_port: Port = 8000
    max_body_bytes: PositiveInt = 64 * 1024
    max_batch_body_bytes: PositiveInt = 4 * 1024 * 1024
    max_payload_depth: PositiveInt = 8
    batch_max_items: PositiveInt = 1000
    cors_origins: str = ""
    db_pool_min: Annotated[int, msgspec.Meta(ge=0)] = 1
    db_pool_max: PositiveInt = 10
    # Prepared statements kept per connection (asyncpg's default); 0 behind pgbouncer's
    # transaction mode, which cannot keep a prepared statement on one server session.
    db_statement_cache_size: Annotated[int, msgspec.Meta(ge=0)] = 100
    # Resolved API keys each API process remembers (0: look every request's key up), and for
    # how long at most; revocations empty every process's cache before they are answered.
    api_key_cache_size: Annotated[int, msgspec.Meta(ge=0)] = 10_000
    api_key_cache_ttl_s: PositiveFloat = 60.0
    # `pulse api` processes sharing the port (SO_REUSEPORT), each one core's worth of accepts.
    api_processes: PositiveInt = 1

    smtp_host: str | None = None
    smtp_port: Port = 587
    smtp_tls: Literal["none", "starttls", "implicit"] = "starttls"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "Pulse <pulse@localhost>"
    smtp_timeout_s: PositiveFloat = 30.0
    smtp_ca_file: str | None = None

    worker_batch_size: PositiveInt = 200
    worker_block_ms: PositiveInt = 1000
    worker_concurrency: PositiveInt = 64
    worker_mailbox_size: PositiveInt = 1000
    worker_ack_batch: PositiveInt = 500
    worker_grace_s: PositiveFloat = 30.0
    worker_consumer: str | None = None
    worker_metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    worker_lease_ms: Annotated[int, msgspec.Meta(ge=100)] = 30_000
    worker_reclaim_interval_ms: PositiveInt = 500
    priority_weights: Annotated[str, msgspec.Meta(pattern=r"^\d+(,\d+){4}$")] = "16,8,4,2,1"
    # Fair share between tenants inside a priority: producers append a tenant's notifications
    # to its own sub-stream, served by weighted DRR (weights: PUT /api/tenants/{id}/weight).
    # Workers read the sub-streams and the shared lane whatever this says: safe to flip any time.
    tenant_fairness: bool = True
    default_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    retry_base_s: PositiveFloat = 1.0
    retry_cap_s: PositiveFloat = 300.0
    reconcile_interval_s: PositiveFloat = 10.0
    reconcile_after_s: PositiveFloat = 30.0
    # Cron: the leader's lock (a standby takes over within it), how often the leader looks for
    # due schedules, and how late an occurrence may fire before its misfire policy decides.
    cron_lock_ttl_s: PositiveFloat = 10.0
    cron_tick_s: PositiveFloat = 1.0
    cron_misfire_grace_s: PositiveFloat = 60.0
    # How many cron schedules one tenant may hold (a create beyond is a 409).
    max_schedules_per_tenant: PositiveInt = 1000
    # Scheduled sends: how far ahead a send_at/delay_s may lie; how long the scheduler sleeps
    # at most between looks at the due-time index (a due time set meanwhile waits this long).
    max_schedule_ahead_s: PositiveFloat = 365 * 86_400.0
    scheduler_max_sleep_ms: PositiveInt = 200
    scheduler_batch: PositiveInt = 1000

    idempotency_retention_s: PositiveFloat = 86_400.0
    # Finished notifications and their rows (audit, attempts, dead letters, results, expanded
    # batches) are kept this many days, then removed by dropping weekly partitions (sql/018);
    # the workers' maintenance pass (one at a time) runs every retention_interval_s.
    retention_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 30
    retention_interval_s: PositiveFloat = 3600.0

    # User tasks (pulse.tasks): the modules a worker serves (comma-separated, as --tasks),
    # runs in flight per task per process, and how long results are kept.
    tasks: Annotated[str, msgspec.Meta(pattern=r"^[\w.,]*$")] = ""
    task_concurrency: PositiveInt = 64
    task_processes: PositiveInt = 4  # processes for cpu_bound tasks, per worker process
    result_retention_s: PositiveFloat = 604_800.0
    result_sweep_interval_s: PositiveFloat = 60.0
    max_result_bytes: PositiveInt = 1024 * 1024  # a task's result (JSON) or progress note, at most
    # A group callback's `results`, at most: over it the callback gets the members' job ids
    # (sql/017); a group that could exceed it is accepted only if its callback takes those ids.
    max_group_results_bytes: PositiveInt = 16 * 1024 * 1024
    # The tenant (name or id) whose job schedules a task module's cron entries (arq's cron_jobs)
    # become; required when a served module has any.
    arq_tenant: str | None = None
    # Ingress rate limits (notifications a second; a batch counts its items), the defaults of
    # every tenant without its own (PUT /api/tenants/{id}/limits). 0 = off; a burst of 0 is one
    # second's worth. Off by default: a deployment's capacity is its own to state.
    rate_limit_per_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    rate_limit_burst: Annotated[int, msgspec.Meta(ge=0)] = 0
    key_rate_limit_per_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    key_rate_limit_burst: Annotated[int, msgspec.Meta(ge=0)] = 0
    limits_refresh_s: PositiveFloat = 5.0  # how long an API process trusts a tenant's limits
    # Providers' own rates, shared by every worker: "smtp=5,relay2=20/40" (per second[/burst]).
    # An attempt over a provider's rate is put off (not made, no attempt used), not failed.
    rate_limit_providers: str = ""
    max_list_limit: PositiveInt = 500

    webhook_secret: str | None = None
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False
    webhook_connect_timeout_s: PositiveFloat = 5.0
    webhook_read_timeout_s: PositiveFloat = 15.0

    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_base_url: str = "https://api.twilio.com"
    twilio_from: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_whatsapp_from: str | None = None
    twilio_webhook_shared_key: str | None = None  # signs callbacks instead of the auth token
    public_url: str | None = None
    fcm_service_account_file: str | None = None
    fcm_base_url: str = "https://fcm.googleapis.com"

    # Failover: named providers (PULSE_PROVIDER_<NAME>__<FIELD>), default routes, breakers.
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=dict)
    routes: str = ""
    routes_refresh_s: PositiveFloat = 5.0
    breaker_failures: PositiveInt = 5
    breaker_cooldown_s: PositiveFloat = 30.0

    # Delivery receipts: the key each tenant's signing secret is derived from.
    receipt_signing_key: Annotated[str, msgspec.Meta(min_length=32)] | None = None
    receipt_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10

    # Channel plugins' own settings (PULSE_CHANNEL_<NAME>__<FIELD>), checked by the registry.
    channel_settings: dict[str, dict[str, str]] = msgspec.field(default_factory=dict)

    dev_api_key: str | None = None

    def __repr__(self) -> str:
        shown: dict[str, Any] = {
            name: ("***" if name in SECRET_FIELDS and value is not None else value)
            for name, value in msgspec.structs.asdict(self).items()
        }
        shown["providers"] = sorted(self.providers)
        shown["channel_settings"] = {
            name: {f: "***" if is_secret_field(f) else v for f, v in fields.items()}
            for name, fields in self.channel_settings.items()
        }
        return f"Settings({shown})"

    def weights(self) -> list[int]:
        """Per-priority fetch weights, most urgent first (validated: five positive integers)."""
        values = [int(part) for part in self.priority_weights.split(",")]
        if any(value < 1 for value in values):
            raise ConfigError(f"PULSE_PRIORITY_WEIGHTS={self.priority_weights!r}: use positives")
        return values

    def provider_rates(self) -> dict[str, Rate]:
        """Each rate-limited provider account's rate (validated: names and positive rates)."""
        return provider_rates(self.rate_limit_providers)

    def secret_values(self) -> list[str]:
        """The configured secrets themselves, to scrub from anything Pulse stores or logs."""
        values = [getattr(self, name) for name in SECRET_FIELDS]
        values += provider_secrets(self.providers)
        values += [
            value
            for fields in self.channel_settings.values()
            for field, value in fields.items()
            if is_secret_field(field)
        ]
        return [value for value in values if isinstance(value, str) and len(value) >= 4]

    def cors_allowed(self) -> frozenset[str]:
        """Origins allowed by CORS; empty (the default) means CORS is off."""
        return frozenset(o.strip() for o in self.cors_origins.split(",") if o.strip())

    def require_redis_url(self) -> str:
        """Processes other than ``pulse dev`` need real server addresses."""
        if not self.redis_url:
            raise ConfigError("PULSE_REDIS_URL is not set (only `pulse dev` starts its own Redis)")
        return self.redis_url

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError(
                "PULSE_DATABASE_URL is not set (only `pulse dev` starts its own PostgreSQL)"
            )
        return self.database_url


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def read_dotenv(path: Path) -> dict[str, str]:
    """Values from a ``.env`` file; a missing file is simply empty."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {key: value for key, value in dotenv_values(path).items() if value is not None}


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: Path | None = Path(".env")
) -> Settings:
    """Parse settings; the process environment wins over ``.env``."""
    merged: dict[str, str] = dict(read_dotenv(dotenv_path)) if dotenv_path else {}
    merged.update(os.environ if environ is None else environ)
    raw = _pulse_fields(merged)
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc, raw)) from None
    return msgspec.structs.replace(
        settings, providers=parse_providers(merged), channel_settings=parse_channel_settings(merged)
    )


def _pulse_fields(env: Mapping[str, str]) -> dict[str, Any]:
    known = set(Settings.__struct_fields__) - {"providers", "channel_settings"}
    fields: dict[str, Any] = {}
    for name, value in env.items():
        if (
            not name.startswith(ENV_PREFIX)
            or name.startswith(FOREIGN_PREFIXES)
            or name in FOREIGN_NAMES
        ):
            continue
        if name.startswith((PROVIDER_PREFIX, CHANNEL_PREFIX)):  # groups: parsed on their own
            continue
        field = name[len(ENV_PREFIX) :].lower()
        if field not in known:
            raise ConfigError(f"{name} is not a Pulse setting (see the configuration table)")
        fields[field] = None if value == "" and _optional(field) else value
    return fields


def _optional(field: str) -> bool:
    return getattr(Settings(), field) is None


def _explain(exc: msgspec.ValidationError, raw: Mapping[str, Any]) -> str:
    match = re.search(r"at `\$\.(\w+)`", str(exc))
    if not match:
        return f"invalid settings: {exc}"
    field = match.group(1)
    reason = str(exc).split(" - at ")[0]
    shown = "***" if field in SECRET_FIELDS else repr(raw.get(field))
    return f"{env_name(field)}={shown} is invalid: {reason}"
