"""Channel plugins, found through the ``pulse.channels`` entry point group, and the providers
that deliver each channel.

Pulse's own channels are registered there too (pyproject.toml), so a user's channel is a
package with one entry point, and nothing in Pulse changes. The composition root asks this
module for the specs (the API checks requests with them) and the providers of each channel
(workers deliver through them): the default one from the flat settings, plus every named
provider (``PULSE_PROVIDER_<NAME>__*``) of the channel's provider kind.
"""

from __future__ import annotations

import base64
import binascii
import ssl
from dataclasses import replace
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

import msgspec

from pulse.channels.email import EMAIL_SPEC, EmailChannel, SmtpConfig
from pulse.channels.fcm import PUSH_SPEC, FcmChannel, FcmConfig, ServiceAccount
from pulse.channels.log import LOG_SPEC, LogChannel
from pulse.channels.twilio import SMS_SPEC, WHATSAPP_SPEC, TwilioChannel, TwilioConfig
from pulse.channels.webhook import (
    SECRET_PREFIX,
    WEBHOOK_SPEC,
    SecretsFor,
    WebhookChannel,
    WebhookConfig,
    WebhookPayload,
    check_url,
)
from pulse.config import ProviderConfig, Settings, SmtpProvider, TwilioProvider, provider_env_name
from pulse.core.errors import ConfigError
from pulse.core.models import RECEIPT_CHANNEL
from pulse.core.ports import Channel, ChannelPlugin, ChannelSpec
from pulse.core.routes import default_provider

ENTRY_POINT_GROUP = "pulse.channels"


def smtp_config(settings: Settings) -> SmtpConfig:
    return SmtpConfig(
        host=settings.smtp_host or "127.0.0.1",
        port=settings.smtp_port,
        tls=settings.smtp_tls,
        username=settings.smtp_username,
        password=settings.smtp_password,
        sender=settings.smtp_from,
        timeout_s=settings.smtp_timeout_s,
        tls_context=_tls_context(settings.smtp_ca_file),
    )


def _tls_context(
    ca_file: str | None, variable: str = "PULSE_SMTP_CA_FILE"
) -> ssl.SSLContext | None:
    """Trust ``ca_file`` (a private relay's CA) instead of the system store when given."""
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{variable}={ca_file!r} is invalid: {exc}") from None


def webhook_config(settings: Settings) -> WebhookConfig:
    secret = settings.webhook_secret or ""
    if secret:
        try:
            base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("PULSE_WEBHOOK_SECRET=*** is invalid: use whsec_<base64>") from None
    return WebhookConfig(
        secret=secret,
        allow_http=settings.webhook_allow_http,
        allow_private=settings.webhook_allow_private,
        connect_timeout_s=settings.webhook_connect_timeout_s,
        read_timeout_s=settings.webhook_read_timeout_s,
    )


def _webhook_spec(settings: Settings) -> ChannelSpec:
    allow_http = settings.webhook_allow_http
    return ChannelSpec(
        name=WEBHOOK_SPEC.name,
        payload_type=WEBHOOK_SPEC.payload_type,
        check_recipient=lambda value: check_url(value, allow_http),
    )


def twilio_config(settings: Settings) -> TwilioConfig:
    return TwilioConfig(
        account_sid=settings.twilio_account_sid or "",
        auth_token=settings.twilio_auth_token or "",
        base_url=settings.twilio_base_url,
        from_number=settings.twilio_from,
        messaging_service_sid=settings.twilio_messaging_service_sid,
        whatsapp_from=settings.twilio_whatsapp_from,
        status_callback_base=settings.public_url,
    )


def fcm_config(settings: Settings) -> FcmConfig:
    account = None
    if settings.fcm_service_account_file:
        account = _service_account(
            settings.fcm_service_account_file, "PULSE_FCM_SERVICE_ACCOUNT_FILE"
        )
    return FcmConfig(account=account, base_url=settings.fcm_base_url)


def _service_account(path: str, variable: str) -> ServiceAccount:
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=ServiceAccount)
    except (OSError, msgspec.DecodeError) as exc:
        raise ConfigError(f"{variable}={path!r} is invalid: {exc}") from None


def named_provider(settings: Settings, name: str, config: ProviderConfig, channel: str) -> Channel:
    """The adapter of a named provider for one channel it serves."""
    if isinstance(config, SmtpProvider):
        return EmailChannel(
            SmtpConfig(
                host=config.host,
                port=config.port,
                tls=config.tls,
                username=config.username,
                password=config.password,
                sender=config.sender,
                timeout_s=config.timeout_s,
                tls_context=_tls_context(config.ca_file, provider_env_name(name, "ca_file")),
            )
        )
    if isinstance(config, TwilioProvider):
        twilio = TwilioConfig(
            account_sid=config.account_sid,
            auth_token=config.auth_token,
            base_url=config.base_url,
            from_number=config.sender,
            messaging_service_sid=config.messaging_service_sid,
            whatsapp_from=config.whatsapp_from,
            status_callback_base=settings.public_url,
            provider=name,
        )
        return TwilioChannel(twilio, whatsapp=channel == "whatsapp")
    account = _service_account(
        config.service_account_file, provider_env_name(name, "service_account_file")
    )
    return FcmChannel(FcmConfig(account=account, base_url=config.base_url))


def receipt_channel(settings: Settings, secrets_for: SecretsFor) -> Channel:
    """The internal channel that POSTs delivery receipts, signed with each tenant's secret."""
    return WebhookChannel(webhook_config(settings), spec=RECEIPT_SPEC, secrets_for=secrets_for)


RECEIPT_SPEC = ChannelSpec(
    name=RECEIPT_CHANNEL, payload_type=WebhookPayload, check_recipient=WEBHOOK_SPEC.check_recipient
)


def _twilio_missing(settings: Settings) -> str | None:
    """What the default Twilio account lacks (the API refuses sms and whatsapp with it: 501)."""
    if not settings.twilio_account_sid:
        return "PULSE_TWILIO_ACCOUNT_SID"
    return None if settings.twilio_auth_token else "PULSE_TWILIO_AUTH_TOKEN"


def _fcm_missing(settings: Settings) -> str | None:
    return None if settings.fcm_service_account_file else "PULSE_FCM_SERVICE_ACCOUNT_FILE"


EMAIL = ChannelPlugin("email", lambda s: EMAIL_SPEC, lambda s: EmailChannel(smtp_config(s)))
LOG = ChannelPlugin("log", lambda s: LOG_SPEC, lambda s: LogChannel())
WEBHOOK = ChannelPlugin("webhook", _webhook_spec, lambda s: WebhookChannel(webhook_config(s)))
SMS = ChannelPlugin(
    "sms",
    lambda s: replace(SMS_SPEC, missing=_twilio_missing(s)),
    lambda s: TwilioChannel(twilio_config(s), whatsapp=False),
)
PUSH = ChannelPlugin(
    "push",
    lambda s: replace(PUSH_SPEC, missing=_fcm_missing(s)),
    lambda s: FcmChannel(fcm_config(s)),
)
WHATSAPP = ChannelPlugin(
    "whatsapp",
    lambda s: replace(WHATSAPP_SPEC, missing=_twilio_missing(s)),
    lambda s: TwilioChannel(twilio_config(s), whatsapp=True),
)


@cache
def plugins() -> dict[str, ChannelPlugin]:
    """Every installed channel plugin by name (loaded once per process)."""
    found: dict[str, ChannelPlugin] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        plugin = entry.load()
        if not isinstance(plugin, ChannelPlugin):
            raise ConfigError(
                f"entry point {entry.name!r} of {ENTRY_POINT_GROUP} is no ChannelPlugin"
            )
        found[plugin.name] = plugin
    for builtin in (
        EMAIL,
        LOG,
        WEBHOOK,
        SMS,
        WHATSAPP,
        PUSH,
    ):  # present even when run from a source tree
        found.setdefault(builtin.name, builtin)
    return found


def channel_specs(settings: Settings) -> dict[str, ChannelSpec]:
    return {name: plugin.spec(settings) for name, plugin in plugins().items()}


ProviderSets = dict[str, dict[str, Channel]]


def build_channels(settings: Settings, quiet_log: bool = False) -> ProviderSets:
    """Every channel's providers: channel -> provider name -> adapter."""
    channels: ProviderSets = {}
    for name, plugin in plugins().items():
        spec = plugin.spec(settings)
        providers = {default_provider(spec): plugin.build(settings)}
        for provider, config in settings.providers.items():
            if spec.provider_kind == type(config).__struct_config__.tag:
                providers[provider] = named_provider(settings, provider, config, name)
        channels[name] = providers
    if quiet_log:
        channels["log"] = {"log": LogChannel(quiet=True)}
    return channels
