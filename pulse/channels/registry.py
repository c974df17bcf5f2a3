"""Channel plugins, found through the ``pulse.channels`` entry point group.

Pulse's own channels are registered there too (pyproject.toml), so a user's channel is a
package with one entry point, and nothing in Pulse changes. The composition root asks this
module for the specs (the API checks requests with them) and the channels (workers deliver
with them).
"""

from __future__ import annotations

import base64
import binascii
import ssl
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
    WebhookChannel,
    WebhookConfig,
    check_url,
)
from pulse.config import Settings
from pulse.errors import ConfigError
from pulse.ports import Channel, ChannelPlugin, ChannelSpec

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


def _tls_context(ca_file: str | None) -> ssl.SSLContext | None:
    """Trust ``ca_file`` (a private relay's CA) instead of the system store when given."""
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"PULSE_SMTP_CA_FILE={ca_file!r} is invalid: {exc}") from None


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
        path = settings.fcm_service_account_file
        try:
            account = msgspec.json.decode(Path(path).read_bytes(), type=ServiceAccount)
        except (OSError, msgspec.DecodeError) as exc:
            raise ConfigError(
                f"PULSE_FCM_SERVICE_ACCOUNT_FILE={path!r} is invalid: {exc}"
            ) from None
    return FcmConfig(account=account, base_url=settings.fcm_base_url)


EMAIL = ChannelPlugin("email", lambda s: EMAIL_SPEC, lambda s: EmailChannel(smtp_config(s)))
LOG = ChannelPlugin("log", lambda s: LOG_SPEC, lambda s: LogChannel())
WEBHOOK = ChannelPlugin("webhook", _webhook_spec, lambda s: WebhookChannel(webhook_config(s)))
SMS = ChannelPlugin(
    "sms", lambda s: SMS_SPEC, lambda s: TwilioChannel(twilio_config(s), whatsapp=False)
)
PUSH = ChannelPlugin("push", lambda s: PUSH_SPEC, lambda s: FcmChannel(fcm_config(s)))
WHATSAPP = ChannelPlugin(
    "whatsapp", lambda s: WHATSAPP_SPEC, lambda s: TwilioChannel(twilio_config(s), whatsapp=True)
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


def build_channels(settings: Settings, quiet_log: bool = False) -> dict[str, Channel]:
    channels = {name: plugin.build(settings) for name, plugin in plugins().items()}
    if quiet_log:
        channels["log"] = LogChannel(quiet=True)
    return channels
