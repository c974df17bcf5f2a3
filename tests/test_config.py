"""Settings: parsed once, typed, and a bad value stops start-up naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from pulse.config import load_settings
from pulse.core.errors import ConfigError

pytestmark = pytest.mark.unit


def test_values_are_typed_and_env_wins_over_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("PULSE_HTTP_PORT=9001\nPULSE_SMTP_TLS=implicit\n")

    settings = load_settings({"PULSE_HTTP_PORT": "9002"}, dotenv_path=dotenv)

    assert settings.http_port == 9002
    assert settings.smtp_tls == "implicit"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PULSE_HTTP_PORT", "eighty"),
        ("PULSE_HTTP_PORT", "70000"),
        ("PULSE_SMTP_TLS", "maybe"),
        ("PULSE_WORKER_BATCH_SIZE", "0"),
        ("PULSE_RETENTION_DAYS", "0"),
        ("PULSE_RETENTION_DAYS", "3651"),
        ("PULSE_RETENTION_DAYS", "1.5"),
    ],
)
def test_bad_value_names_variable_and_value(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value}, dotenv_path=None)

    assert name in str(caught.value)
    assert value in str(caught.value)


def test_retention_days_default_to_thirty_and_take_whole_days() -> None:
    assert load_settings({}, dotenv_path=None).retention_days == 30
    assert load_settings({"PULSE_RETENTION_DAYS": "7"}, dotenv_path=None).retention_days == 7


def test_unknown_pulse_variable_is_refused() -> None:
    with pytest.raises(ConfigError, match="PULSE_HTTP_PROT"):
        load_settings({"PULSE_HTTP_PROT": "8000"}, dotenv_path=None)


def test_the_clients_variables_the_readme_exports_do_not_stop_pulse_commands() -> None:
    """`make dev` prints `export PULSE_KEY=...` to paste; the shell must still run `pulse`."""
    settings = load_settings(
        {"PULSE_KEY": "pk_abc", "PULSE_URL": "http://127.0.0.1:8000", "PULSE_HTTP_PORT": "8123"},
        dotenv_path=None,
    )

    assert settings.http_port == 8123


def test_secrets_do_not_show_in_repr() -> None:
    settings = load_settings({"PULSE_SMTP_PASSWORD": "hunter2"}, dotenv_path=None)

    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings)
