"""Builds the channels a process serves from its settings (the composition root calls this)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from pulse.channels.email import EMAIL_SPEC, EmailChannel, SmtpConfig
from pulse.channels.log import LOG_SPEC, LogChannel
from pulse.config import Settings
from pulse.errors import ConfigError
from pulse.ports import Channel, ChannelSpec

SPECS: Mapping[str, ChannelSpec] = {spec.name: spec for spec in (EMAIL_SPEC, LOG_SPEC)}


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


def build_channels(settings: Settings, quiet_log: bool = False) -> dict[str, Channel]:
    return {
        "email": EmailChannel(smtp_config(settings)),
        "log": LogChannel(quiet=quiet_log),
    }
