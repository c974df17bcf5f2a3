"""Channel plugins, found through the ``pulse.channels`` entry point group, and the providers
that deliver each channel.

Pulse's own channels are registered there too (pyproject.toml), so a user's channel is a
package with one entry point, and nothing in Pulse changes. The composition root asks this
module for the specs (the API checks requests with them) and the providers of each channel
(workers deliver through them): the default one from the flat settings, plus every named
provider (``PULSE_PROVIDER_<NAME>__*``) of the channel's provider kind. A third-party plugin
gets a settings struct of its own, filled from ``PULSE_CHANNEL_<NAME>__<FIELD>`` and checked at
start-up like every other setting.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import msgspec

from pulse.channels.email import EMAIL_SPEC, EmailChannel, SmtpConfig
from pulse.channels.fcm import PUSH_SPEC, FcmChannel, FcmConfig, ServiceAccount
from pulse.channels.log import LOG_SPEC, LogChannel
from pulse.channels.twilio import (
    SMS_SPEC,
    WHATSAPP_SPEC,
    TwilioChannel,
    TwilioConfig,
    sender_variables,
    twilio_sender,
)
from pulse.channels.webhook import (
    WEBHOOK_SPEC,
    SecretsFor,
    WebhookChannel,
    WebhookConfig,
    WebhookPayload,
    check_url,
)
from pulse.config import (
    ProviderConfig,
    Settings,
    SmtpProvider,
    TwilioProvider,
    channel_env_name,
    channel_key,
    convert_fields,
    is_secret_field,
    provider_env_name,
)
from pulse.core.errors import ConfigError
from pulse.core.models import RECEIPT_CHANNEL
from pulse.core.ports import Channel, ChannelPlugin, ChannelSpec
from pulse.core.routes import default_provider

ENTRY_POINT_GROUP = "pulse.channels"


def smtp_config(settings: Settings) -> SmtpConfig:
    """The default relay, from the flat ``PULSE_SMTP_*`` settings."""
    default = SmtpProvider(
        host=settings.smtp_host or "127.0.0.1",
        port=settings.smtp_port,
        tls=settings.smtp_tls,
        username=settings.smtp_username,
        password=settings.smtp_password,
        sender=settings.smtp_from,
        timeout_s=settings.smtp_timeout_s,
        ca_file=settings.smtp_ca_file,
    )
    return _smtp(default, "PULSE_SMTP_CA_FILE")


def _smtp(config: SmtpProvider, ca_variable: str) -> SmtpConfig:
    return SmtpConfig(
        host=config.host,
        port=config.port,
        tls=config.tls,
        username=config.username,
        password=config.password,
        sender=config.sender,
        timeout_s=config.timeout_s,
        tls_context=_tls_context(config.ca_file, ca_variable),
    )


def _tls_context(ca_file: str | None, variable: str) -> ssl.SSLContext | None:
    """Trust ``ca_file`` (a private relay's CA) instead of the system store when given."""
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{variable}={ca_file!r} is invalid: {exc}") from None


SIGNING_KEY_MISSING = (
    "webhooks and receipts are signed with secrets derived from"
    " PULSE_RECEIPT_SIGNING_KEY, which is not set on this worker"
)


def webhook_config(settings: Settings) -> WebhookConfig:
    """Refuses PULSE_WEBHOOK_SECRET: one secret for every tenant let any tenant forge another's
    webhooks (and unset, it signed with an empty key). Each tenant has its own now."""
    if settings.webhook_secret is not None:
        raise ConfigError(
            "PULSE_WEBHOOK_SECRET=*** is no longer used: each tenant signs its webhooks with its"
            " own secret (GET /api/webhooks/secret), derived from PULSE_RECEIPT_SIGNING_KEY;"
            " unset PULSE_WEBHOOK_SECRET"
        )
    return WebhookConfig(
        allow_http=settings.webhook_allow_http,
        allow_private=settings.webhook_allow_private,
        connect_timeout_s=settings.webhook_connect_timeout_s,
        read_timeout_s=settings.webhook_read_timeout_s,
    )


def _webhook_spec(settings: Settings) -> ChannelSpec:
    config = webhook_config(settings)
    return ChannelSpec(
        name=WEBHOOK_SPEC.name,
        payload_type=WEBHOOK_SPEC.payload_type,
        check_recipient=lambda value: check_url(value, config.allow_http, config.allow_private),
        missing=None if settings.receipt_signing_key else "PULSE_RECEIPT_SIGNING_KEY",
    )


def twilio_config(settings: Settings) -> TwilioConfig:
    """The default account, from the flat ``PULSE_TWILIO_*`` settings."""
    default = TwilioProvider(
        account_sid=settings.twilio_account_sid or "",
        auth_token=settings.twilio_auth_token or "",
        base_url=settings.twilio_base_url,
        sender=settings.twilio_from,
        messaging_service_sid=settings.twilio_messaging_service_sid,
        whatsapp_from=settings.twilio_whatsapp_from,
    )
    return _twilio(default, settings.public_url, provider=None)


def _twilio(config: TwilioProvider, public_url: str | None, provider: str | None) -> TwilioConfig:
    return TwilioConfig(
        account_sid=config.account_sid,
        auth_token=config.auth_token,
        base_url=config.base_url,
        from_number=config.sender,
        messaging_service_sid=config.messaging_service_sid,
        whatsapp_from=config.whatsapp_from,
        status_callback_base=public_url,
        provider=provider,
    )


def fcm_config(settings: Settings) -> FcmConfig:
    """The default project, from the flat ``PULSE_FCM_*`` settings (none: not configured)."""
    file = settings.fcm_service_account_file
    return _fcm(file, settings.fcm_base_url, "PULSE_FCM_SERVICE_ACCOUNT_FILE")


def _fcm(account_file: str | None, base_url: str, variable: str) -> FcmConfig:
    account = _service_account(account_file, variable) if account_file else None
    return FcmConfig(account=account, base_url=base_url)


def _service_account(path: str, variable: str) -> ServiceAccount:
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=ServiceAccount)
    except (OSError, msgspec.DecodeError) as exc:
        raise ConfigError(f"{variable}={path!r} is invalid: {exc}") from None


def named_provider(settings: Settings, name: str, config: ProviderConfig, channel: str) -> Channel:
    """The adapter of a named provider for one channel it serves."""
    if isinstance(config, SmtpProvider):
        return EmailChannel(_smtp(config, provider_env_name(name, "ca_file")))
    if isinstance(config, TwilioProvider):
        twilio = _twilio(config, settings.public_url, provider=name)
        return TwilioChannel(twilio, whatsapp=channel == "whatsapp")
    variable = provider_env_name(name, "service_account_file")
    return FcmChannel(_fcm(config.service_account_file, config.base_url, variable))


def with_tenant_secrets(
    channels: Mapping[str, Mapping[str, Channel]],
    settings: Settings,
    webhooks: SecretsFor,
    receipts: SecretsFor,
) -> ProviderSets:
    """The channels as a worker runs them: Pulse's webhook channel signing with each tenant's
    secrets, and the internal channel that POSTs delivery receipts. Only the worker knows the
    tenants' secret generations, so it wires them here."""
    config = webhook_config(settings)
    wired = {name: dict(providers) for name, providers in channels.items()}
    own = wired.get(WEBHOOK_SPEC.name, {})
    if isinstance(own.get(WEBHOOK_SPEC.name), WebhookChannel):  # not a plugin's replacement
        own[WEBHOOK_SPEC.name] = WebhookChannel(
            config, secrets_for=webhooks, not_configured=SIGNING_KEY_MISSING
        )
    receipt = WebhookChannel(
        config, spec=RECEIPT_SPEC, secrets_for=receipts, not_configured=SIGNING_KEY_MISSING
    )
    wired[RECEIPT_CHANNEL] = {RECEIPT_CHANNEL: receipt}
    return wired


RECEIPT_SPEC = ChannelSpec(
    name=RECEIPT_CHANNEL, payload_type=WebhookPayload, check_recipient=WEBHOOK_SPEC.check_recipient
)


def _twilio_missing(settings: Settings, *, whatsapp: bool) -> str | None:
    """What the default Twilio account lacks to send on a channel: credentials, or a sender
    for it (the API refuses sms or whatsapp with it: 501, rather than fail every attempt)."""
    if not settings.twilio_account_sid:
        return "PULSE_TWILIO_ACCOUNT_SID"
    if not settings.twilio_auth_token:
        return "PULSE_TWILIO_AUTH_TOKEN"
    if twilio_sender(twilio_config(settings), whatsapp=whatsapp) is not None:
        return None  # the same rule the channel sends by
    return sender_variables(None, whatsapp=whatsapp)[0]


def _fcm_missing(settings: Settings) -> str | None:
    return None if settings.fcm_service_account_file else "PULSE_FCM_SERVICE_ACCOUNT_FILE"


EMAIL: ChannelPlugin[Settings] = ChannelPlugin(
    "email", lambda s: EMAIL_SPEC, lambda s: EmailChannel(smtp_config(s))
)
LOG: ChannelPlugin[Settings] = ChannelPlugin("log", lambda s: LOG_SPEC, lambda s: LogChannel())
WEBHOOK: ChannelPlugin[Settings] = ChannelPlugin(  # signs nothing until a worker wires secrets in
    "webhook", _webhook_spec, lambda s: WebhookChannel(webhook_config(s))
)
SMS: ChannelPlugin[Settings] = ChannelPlugin(
    "sms",
    lambda s: replace(SMS_SPEC, missing=_twilio_missing(s, whatsapp=False)),
    lambda s: TwilioChannel(twilio_config(s), whatsapp=False),
)
PUSH: ChannelPlugin[Settings] = ChannelPlugin(
    "push",
    lambda s: replace(PUSH_SPEC, missing=_fcm_missing(s)),
    lambda s: FcmChannel(fcm_config(s)),
)
WHATSAPP: ChannelPlugin[Settings] = ChannelPlugin(
    "whatsapp",
    lambda s: replace(WHATSAPP_SPEC, missing=_twilio_missing(s, whatsapp=True)),
    lambda s: TwilioChannel(twilio_config(s), whatsapp=True),
)
BUILTINS = (EMAIL, LOG, WEBHOOK, SMS, WHATSAPP, PUSH)
AnyPlugin = ChannelPlugin[Any]


@cache
def plugins() -> dict[str, AnyPlugin]:
    """Every installed channel plugin by name (loaded once per process)."""
    found: dict[str, AnyPlugin] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        plugin = entry.load()
        if not isinstance(plugin, ChannelPlugin):
            raise ConfigError(
                f"entry point {entry.name!r} of {ENTRY_POINT_GROUP} is no ChannelPlugin"
            )
        found[plugin.name] = plugin
    for builtin in BUILTINS:  # present even when run from a source tree
        found.setdefault(builtin.name, builtin)
    return found


def plugin_settings(plugin: AnyPlugin, settings: Settings) -> Any:
    """What ``plugin`` is built from: its own settings struct, filled from
    ``PULSE_CHANNEL_<NAME>__<FIELD>``, or the flat settings for Pulse's own channels."""
    if plugin.settings_type is None:
        return settings
    raw = settings.channel_settings.get(channel_key(plugin.name), {})
    known = {field.encode_name for field in msgspec.structs.fields(plugin.settings_type)}
    for field in sorted(set(raw) - known):
        raise ConfigError(
            f"{channel_env_name(plugin.name, field)} is not a setting of this channel"
        )
    return convert_fields(
        raw,
        plugin.settings_type,
        lambda field: channel_env_name(plugin.name, field),
        [field for field in raw if is_secret_field(field)],
        needed_by=f"the {plugin.name} channel",
    )


def check_channel_settings(settings: Settings) -> None:
    """Start-up check: every ``PULSE_CHANNEL_*`` group names an installed plugin that takes
    settings, and each such plugin's settings convert."""
    takers = {channel_key(p.name): p for p in plugins().values() if p.settings_type}
    for name, fields in sorted(settings.channel_settings.items()):
        if name not in takers:
            variable = channel_env_name(name, min(fields))
            raise ConfigError(f"{variable}: no installed channel {name!r} takes settings")
    for plugin in takers.values():
        plugin_settings(plugin, settings)


def channel_specs(settings: Settings) -> dict[str, ChannelSpec]:
    check_channel_settings(settings)
    return {
        name: plugin.spec(plugin_settings(plugin, settings)) for name, plugin in plugins().items()
    }


ProviderSets = dict[str, dict[str, Channel]]


def build_channels(settings: Settings, quiet_log: bool = False) -> ProviderSets:
    """Every channel's providers: channel -> provider name -> adapter."""
    check_channel_settings(settings)
    channels: ProviderSets = {}
    for name, plugin in plugins().items():
        own = plugin_settings(plugin, settings)
        spec = plugin.spec(own)
        providers = {default_provider(spec): plugin.build(own)}
        for provider, config in settings.providers.items():
            if spec.provider_kind == type(config).__struct_config__.tag:
                providers[provider] = named_provider(settings, provider, config, name)
        channels[name] = providers
    if quiet_log:
        channels["log"] = {"log": LogChannel(quiet=True)}
    return channels
