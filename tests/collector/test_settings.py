"""Settings: read once from the environment, malformed values named, production without embedded defaults."""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
import sys

import pytest

from collector.settings import Settings, SettingsError, redact_url


def test_defaults_are_the_documented_ones() -> None:
    """With nothing set, the embedded development defaults apply."""
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert (settings.ack_mode, settings.buffered_success_status) == ("buffered", 200)
    assert (settings.flush_max_events, settings.flush_interval_ms, settings.buffer_max_events) == (1000, 50, 100_000)
    assert (settings.max_body_bytes, settings.max_events_per_request, settings.max_event_bytes) == (1 << 20, 500, 32768)
    assert settings.database_url is None and settings.pixel_management_url is None
    assert settings.data_dir == ".data"


def test_values_are_cast() -> None:
    """Numbers, choices and proxy lists are parsed into their types."""
    settings = Settings.from_env(
        {
            "PORT": "9000",
            "ACK_MODE": "Durable",
            "FLUSH_INTERVAL_MS": "25",
            "TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1",
            "AUTH_TIMEOUT_S": "0.5",
            "BUFFERED_SUCCESS_STATUS": "202",
            "DATABASE_URL": "postgresql://u:p@db:5432/events",
        }
    )
    assert settings.port == 9000
    assert settings.ack_mode == "durable"
    assert settings.flush_interval_s == 0.025
    assert settings.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.168.1.1/32"))
    assert settings.auth_timeout_s == 0.5
    assert settings.buffered_success_status == 202


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("ACK_MODE", "sometimes"),
        ("FLUSH_MAX_EVENTS", "0"),
        ("BUFFER_MAX_EVENTS", "-5"),
        ("TRUSTED_PROXIES", "10.0.0.0/33"),
        ("DATABASE_URL", "mysql://x"),
        ("PIXEL_MANAGEMENT_URL", "ftp://x"),
        ("ENVIRONMENT", "staging"),
        ("AUTH_TIMEOUT_S", "nan"),
        ("BUFFERED_SUCCESS_STATUS", "201"),
        ("BUFFERED_SUCCESS_STATUS", "accepted"),
    ],
)
def test_malformed_value_names_the_variable(name: str, value: str) -> None:
    """A malformed value fails with a message that names its variable."""
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_production_refuses_embedded_defaults() -> None:
    """ENVIRONMENT=production without the four required variables refuses, naming each."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"ENVIRONMENT": "production", "DATABASE_URL": "postgresql://db/x"})
    message = str(info.value)
    for name in ("PIXEL_MANAGEMENT_URL", "ADMIN_TOKEN", "IP_HASH_SECRET"):
        assert name in message
    assert "DATABASE_URL" not in message
    complete = {
        "ENVIRONMENT": "production",
        "DATABASE_URL": "postgresql://db/x",
        "PIXEL_MANAGEMENT_URL": "https://pm.example",
        "ADMIN_TOKEN": secrets.token_hex(32),
        "IP_HASH_SECRET": secrets.token_hex(32),
    }
    assert Settings.from_env(complete).environment == "production"


def test_the_service_refuses_to_start_in_production_without_settings() -> None:
    """`python -m collector` exits non-zero with the reason, before starting anything."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PIXEL_MANAGEMENT_URL")}
    env["ENVIRONMENT"] = "production"
    result = subprocess.run(
        [sys.executable, "-m", "collector"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "ENVIRONMENT=production needs DATABASE_URL" in result.stderr


def test_password_is_hidden_in_logged_urls() -> None:
    """The database URL written to the startup log hides its password."""
    assert redact_url("postgresql://app:s3cret@db:5432/events") == "postgresql://app:***@db:5432/events"
    assert "s3cret" not in redact_url("postgres://app:s3cret@db/x")


def test_a_graceful_stop_splits_drain_timeout_between_requests_and_the_buffer() -> None:
    """Requests in flight and the buffer's flush run one after the other: together they take DRAIN_TIMEOUT_S, not
    twice it (uvicorn and the buffer were each given all of it: 40 s against a 45 s grace period less 10 s preStop)."""
    for total in (2.0, 20.0, 45.0):
        settings = Settings(drain_timeout_s=total)
        assert settings.connection_drain_s >= 1 and settings.buffer_drain_s >= 1
        assert settings.connection_drain_s + settings.buffer_drain_s == total
    assert Settings().connection_drain_s == 5 and Settings().buffer_drain_s == 15
