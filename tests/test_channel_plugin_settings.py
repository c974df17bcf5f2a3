"""A third-party channel's own settings: PULSE_CHANNEL_<NAME>__<FIELD>, typed by the plugin's
struct and checked at start-up like every other setting (tests/plugins/pulse-example-channel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pulse.channels.registry import channel_specs, plugin_settings, plugins
from pulse.config import load_settings
from pulse.core.errors import ConfigError

pytestmark = pytest.mark.unit


def test_the_plugin_gets_its_own_typed_settings(example_plugin: Path) -> None:
    env = {"PULSE_CHANNEL_EXAMPLE__GREETING": "Hi", "PULSE_CHANNEL_EXAMPLE__MAX_LENGTH": "5"}
    settings = load_settings(env, dotenv_path=None)

    own = plugin_settings(plugins()["example"], settings)

    assert type(own).__name__ == "ExampleSettings"
    assert (own.greeting, own.max_length, own.outbox) == ("Hi", 5, None)
    assert "example" in channel_specs(settings)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"PULSE_CHANNEL_EXAMPLE__MAX_LENGTH": "zero"},
            "PULSE_CHANNEL_EXAMPLE__MAX_LENGTH='zero' is invalid",
        ),
        (
            {"PULSE_CHANNEL_EXAMPLE__MAX_LENGTH": "0"},
            "PULSE_CHANNEL_EXAMPLE__MAX_LENGTH='0' is invalid",
        ),
        ({"PULSE_CHANNEL_EXAMPLE__GREETNG": "Hi"}, "PULSE_CHANNEL_EXAMPLE__GREETNG is not a"),
        ({"PULSE_CHANNEL_PIGEON__LOFT": "x"}, "no installed channel 'pigeon' takes settings"),
        ({"PULSE_CHANNEL_EMAIL__HOST": "x"}, "no installed channel 'email' takes settings"),
    ],
)
def test_a_bad_channel_setting_stops_start_up_naming_it(
    example_plugin: Path, env: dict[str, str], named: str
) -> None:
    settings = load_settings(env, dotenv_path=None)

    with pytest.raises(ConfigError) as caught:
        channel_specs(settings)

    assert named in str(caught.value)


def test_a_malformed_channel_variable_is_refused() -> None:
    with pytest.raises(ConfigError, match="PULSE_CHANNEL_EXAMPLE_OUTBOX is not a channel setting"):
        load_settings({"PULSE_CHANNEL_EXAMPLE_OUTBOX": "/tmp"}, dotenv_path=None)


def test_a_plugin_secret_is_hidden_and_scrubbed(example_plugin: Path) -> None:
    env = {"PULSE_CHANNEL_EXAMPLE__API_TOKEN": "example-token-123"}
    settings = load_settings(env, dotenv_path=None)

    assert plugin_settings(plugins()["example"], settings).api_token == "example-token-123"
    assert "example-token-123" not in repr(settings)
    assert "example-token-123" in settings.secret_values()


def test_without_the_plugin_its_settings_are_refused() -> None:
    settings = load_settings({"PULSE_CHANNEL_EXAMPLE__GREETING": "Hi"}, dotenv_path=None)

    with pytest.raises(ConfigError, match="no installed channel 'example'"):
        channel_specs(settings)
