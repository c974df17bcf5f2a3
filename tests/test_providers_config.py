"""Named providers from the environment, and default routes: typed, checked, secrets hidden."""

from __future__ import annotations

import pytest

from pulse.channels.registry import build_channels, channel_specs
from pulse.channels.twilio import TwilioChannel
from pulse.config import SmtpProvider, TwilioProvider, load_settings
from pulse.core.errors import ConfigError
from pulse.core.routes import catalog, parse_default_routes

pytestmark = pytest.mark.unit

RELAY = {
    "PULSE_PROVIDER_RELAY2__KIND": "smtp",
    "PULSE_PROVIDER_RELAY2__HOST": "smtp.backup.example.com",
    "PULSE_PROVIDER_RELAY2__PORT": "2525",
    "PULSE_PROVIDER_RELAY2__PASSWORD": "relay-password-1",
    "PULSE_PROVIDER_RELAY2__FROM": "Ops <ops@example.com>",
}
TWILIO_BACKUP = {
    "PULSE_PROVIDER_TWILIO_BACKUP__KIND": "twilio",
    "PULSE_PROVIDER_TWILIO_BACKUP__ACCOUNT_SID": "AC" + "9" * 32,
    "PULSE_PROVIDER_TWILIO_BACKUP__AUTH_TOKEN": "backup-token-123",
}


def test_named_providers_are_typed_and_serve_the_channels_of_their_kind() -> None:
    settings = load_settings(RELAY | TWILIO_BACKUP, dotenv_path=None)

    relay = settings.providers["relay2"]
    known = catalog(channel_specs(settings), settings.providers)
    channels = build_channels(settings)

    assert isinstance(relay, SmtpProvider)
    assert (relay.port, relay.sender) == (2525, "Ops <ops@example.com>")
    assert isinstance(settings.providers["twilio-backup"], TwilioProvider)
    assert known["relay2"] == {"email"}
    assert known["twilio-backup"] == {"sms", "whatsapp"}
    assert known["smtp"] == {"email"}  # the default providers keep their kind's name
    assert set(channels["email"]) == {"smtp", "relay2"}
    assert set(channels["sms"]) == {"twilio", "twilio-backup"}
    assert isinstance(channels["whatsapp"]["twilio-backup"], TwilioChannel)


def test_provider_secrets_are_hidden_and_scrubbed() -> None:
    settings = load_settings(RELAY | TWILIO_BACKUP, dotenv_path=None)

    assert "relay-password-1" not in repr(settings)
    assert "backup-token-123" not in repr(settings)
    assert {"relay-password-1", "backup-token-123"} <= set(settings.secret_values())


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PULSE_PROVIDER_RELAY2__HOST": "x"}, "PULSE_PROVIDER_RELAY2__KIND"),
        (RELAY | {"PULSE_PROVIDER_RELAY2__PORT": "eighty"}, "PULSE_PROVIDER_RELAY2__PORT='eighty'"),
        (RELAY | {"PULSE_PROVIDER_RELAY2__KIND": "pigeon"}, "PULSE_PROVIDER_RELAY2__KIND='pigeon'"),
        (RELAY | {"PULSE_PROVIDER_RELAY2__HOTS": "x"}, "PULSE_PROVIDER_RELAY2__HOTS"),
        ({"PULSE_PROVIDER_RELAY2_HOST": "x"}, "PULSE_PROVIDER_RELAY2_HOST"),
        ({"PULSE_PROVIDER_X__KIND": "twilio"}, "PULSE_PROVIDER_X__ACCOUNT_SID"),
        ({"PULSE_PROVIDER_SMTP__KIND": "smtp"}, "default provider's name"),
    ],
)
def test_a_bad_provider_setting_stops_start_up_naming_it(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env, dotenv_path=None)

    assert named in str(caught.value)


def test_a_missing_field_is_named_and_no_secret_is_shown() -> None:
    env = dict(TWILIO_BACKUP)
    del env["PULSE_PROVIDER_TWILIO_BACKUP__ACCOUNT_SID"]

    with pytest.raises(ConfigError) as caught:
        load_settings(env, dotenv_path=None)

    assert "PULSE_PROVIDER_TWILIO_BACKUP__ACCOUNT_SID is not set" in str(caught.value)
    assert "backup-token-123" not in str(caught.value)


@pytest.mark.parametrize(
    ("routes", "reason"),
    [
        ("email=relay3", "unknown provider 'relay3'"),
        ("email=twilio", "does not deliver email"),
        ("email=smtp,smtp", "listed twice"),
        ("fax=smtp", "not CHANNEL=PROVIDER"),
        ("email=", "at least one provider"),
    ],
)
def test_default_routes_are_checked_at_start_up(routes: str, reason: str) -> None:
    settings = load_settings(RELAY, dotenv_path=None)
    specs = channel_specs(settings)

    with pytest.raises(ConfigError, match=reason):
        parse_default_routes(routes, specs, catalog(specs, settings.providers))


def test_default_routes_parse() -> None:
    settings = load_settings(RELAY | TWILIO_BACKUP, dotenv_path=None)
    specs = channel_specs(settings)

    routes = parse_default_routes(
        "email=relay2, smtp; sms=twilio-backup,twilio", specs, catalog(specs, settings.providers)
    )

    assert routes == {"email": ["relay2", "smtp"], "sms": ["twilio-backup", "twilio"]}


def test_a_misspelt_field_is_named_and_its_value_never_shown() -> None:
    # Given: a Twilio provider whose auth token variable is misspelt (AUTHTOKEN)
    env = dict(TWILIO_BACKUP)
    env["PULSE_PROVIDER_TWILIO_BACKUP__AUTHTOKEN"] = env.pop(
        "PULSE_PROVIDER_TWILIO_BACKUP__AUTH_TOKEN"
    )

    # When: the settings are loaded
    with pytest.raises(ConfigError) as caught:
        load_settings(env, dotenv_path=None)

    # Then: the variable is named, and the value (a secret) is not shown
    assert "PULSE_PROVIDER_TWILIO_BACKUP__AUTHTOKEN is not a setting" in str(caught.value)
    assert "backup-token-123" not in str(caught.value)
