"""Settings: read once from the environment, each variable cast as its type says, S3 settings grouped per bucket,
malformed values named, production without embedded defaults."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import pytest

from collector.casters import HttpUrl, LogLevel, Network, PostgresUrl, UrlPath, caster_for
from collector.settings import DEV_IP_HASH_SECRET, BucketSettings, Settings, SettingsError, redact_url, weak_secret


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


NET8 = ipaddress.ip_network("10.0.0.0/8")


@pytest.mark.parametrize(
    ("hint", "raw", "value"),
    [
        (int, "1_000", 1000),
        (float, "0.5", 0.5),
        (str, "kept as is", "kept as is"),
        (Literal["buffered", "durable"], "Durable", "durable"),
        (Literal["json", "ndjson.gz"], "NDJSON.GZ", "ndjson.gz"),
        (tuple[str, ...], "a.com, b.com=client_b,,", ("a.com", "b.com=client_b")),
        (tuple[Network, ...], "10.0.0.0/8, 2001:db8::1", (NET8, ipaddress.ip_network("2001:db8::1"))),
        (int | None, "7", 7),
        (HttpUrl | None, "https://pm.example/", "https://pm.example"),
        (PostgresUrl | None, "postgres://db/x", "postgres://db/x"),
        (UrlPath, "/e2", "/e2"),
        (LogLevel, "warning", "WARNING"),
    ],
)  # fmt: skip
def test_a_field_type_implies_a_caster_that_accepts_its_values(hint: Any, raw: str, value: object) -> None:
    """The caster derived from a field's type turns accepted text into the typed value (case folded, lists split)."""
    assert caster_for(hint)(raw) == value


@pytest.mark.parametrize(
    ("hint", "raw", "message"),
    [
        (int, "eighty", "invalid literal for int() with base 10: 'eighty'"),
        (float, "nan", "not a finite number: 'nan'"),
        (float, "-inf", "not a finite number: '-inf'"),
        (Literal["buffered", "durable"], "sometimes", "expected one of buffered, durable, got 'sometimes'"),
        (tuple[Network, ...], "10.0.0.0/33", "'10.0.0.0/33' does not appear to be an IPv4 or IPv6 network"),
        (int | None, "x", "invalid literal for int() with base 10: 'x'"),
        (HttpUrl | None, "ftp://x", "expected an http:// or https:// URL"),
        (PostgresUrl | None, "mysql://x", "expected a postgresql:// URL"),
        (UrlPath, "/a?b", "expected an absolute URL path such as /e"),
        (UrlPath, "e", "expected an absolute URL path such as /e"),
        (LogLevel, "loud", "expected one of debug, info, warning, error, got 'loud'"),
    ],
)
def test_a_field_type_implies_a_caster_that_refuses_other_values(hint: Any, raw: str, message: str) -> None:
    """The caster derived from a field's type refuses text it cannot cast, saying what it expected."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        caster_for(hint)(raw)


@pytest.mark.parametrize("hint", [list[str], int | str, tuple[int, ...], Literal[1, 2], bytes])
def test_a_field_type_that_implies_no_caster_is_refused(hint: Any) -> None:
    """A field whose type implies no caster fails when the variables are listed, not silently as a string."""
    with pytest.raises(TypeError, match="no caster"):
        caster_for(hint)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PORT", "eighty", "invalid literal for int() with base 10: 'eighty'"),
        ("ACK_MODE", "sometimes", "expected one of buffered, durable, got 'sometimes'"),
        ("ENVIRONMENT", "staging", "expected one of development, production, got 'staging'"),
        ("EXPORT_FORMAT", "csv", "expected one of json, ndjson.gz, parquet, got 'csv'"),
        ("LOG_LEVEL", "loud", "expected one of debug, info, warning, error, got 'loud'"),
        ("AUTH_TIMEOUT_S", "inf", "not a finite number: 'inf'"),
        ("TRUSTED_PROXIES", "10.0.0.0/33", "'10.0.0.0/33' does not appear to be an IPv4 or IPv6 network"),
        ("DATABASE_URL", "mysql://x", "expected a postgresql:// URL"),
        ("PIXEL_MANAGEMENT_URL", "ftp://x", "expected an http:// or https:// URL"),
        ("S3_ENDPOINT_URL", "ftp://x", "expected an http:// or https:// URL"),
        ("RAW_S3_ENDPOINT_URL", "ftp://x", "expected an http:// or https:// URL"),
        ("PROCESSED_S3_ENDPOINT_URL", "s3.local", "expected an http:// or https:// URL"),
        ("TRACKER_PATH", "s.js", "expected an absolute URL path such as /e"),
    ],
)
def test_a_malformed_value_is_refused_with_the_variable_and_what_was_expected(
    name: str, value: str, message: str
) -> None:
    """from_env refuses a malformed value with `NAME: what was expected`, a bucket's variable included."""
    with pytest.raises(SettingsError, match=f"^{re.escape(f'{name}: {message}')}$"):
        Settings.from_env({name: value})


def test_each_bucket_is_read_from_its_prefix_and_falls_back_to_the_shared_endpoint() -> None:
    """RAW_S3_* and PROCESSED_S3_* fill their own bucket; RAW_S3_ENDPOINT_URL overrides S3_ENDPOINT_URL, which the
    processed bucket (no endpoint of its own) falls back to."""
    settings = Settings.from_env({
        "S3_ENDPOINT_URL": "http://minio:9000/",
        "RAW_S3_ENDPOINT_URL": "https://raw.example",
        "RAW_S3_BUCKET": "raw-events", "RAW_S3_ACCESS_KEY": "AKRAW", "RAW_S3_SECRET_KEY": "raw-secret",
        "RAW_S3_REGION": "eu-west-1",
        "PROCESSED_S3_BUCKET": "processed-events", "PROCESSED_S3_REGION": "us-east-1",
    })  # fmt: skip
    assert settings.raw == BucketSettings("raw-events", "AKRAW", "raw-secret", "eu-west-1", "https://raw.example")
    assert settings.processed == BucketSettings("processed-events", None, None, "us-east-1", "http://minio:9000")
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert Settings.from_env({"RAW_S3_BUCKET": "r"}).raw.endpoint_url is None  # AWS
    assert Settings.from_env({}).processed == BucketSettings()


def test_settings_built_directly_resolve_the_shared_endpoint_too() -> None:
    """Settings(...) built in code resolves S3_ENDPOINT_URL into each bucket without an endpoint of its own."""
    settings = Settings(s3_endpoint_url="http://minio:9000", raw=BucketSettings("r", endpoint_url="http://own:9000"))
    assert settings.raw.endpoint_url == "http://own:9000"
    assert settings.processed.endpoint_url == "http://minio:9000"


def test_no_bucket_key_appears_in_the_settings_repr() -> None:
    """Access and secret keys are kept but never shown by repr() or str() of the settings or of a bucket."""
    keys = {
        "RAW_S3_ACCESS_KEY": "AKIARAWACCESSKEY", "RAW_S3_SECRET_KEY": "raw-secret-key-value",
        "PROCESSED_S3_ACCESS_KEY": "AKIAPROCESSEDKEY", "PROCESSED_S3_SECRET_KEY": "processed-secret-key-value",
    }  # fmt: skip
    settings = Settings.from_env({**keys, "RAW_S3_BUCKET": "raw-events"})
    shown = " ".join((repr(settings), str(settings), repr(settings.raw), repr(settings.processed)))
    assert "raw-events" in shown
    assert not [value for value in keys.values() if value in shown]
    assert (settings.raw.secret_key, settings.processed.access_key) == ("raw-secret-key-value", "AKIAPROCESSEDKEY")


class _Recorder(Mapping[str, str]):
    """An empty environment that records every variable looked up in it."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __getitem__(self, key: str) -> str:
        self.asked.append(key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        self.asked.append(str(key))
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_the_variables_listed_are_exactly_the_ones_from_env_reads() -> None:
    """Settings.variables(), the list docs/configuration.md must document, names exactly what from_env looks up,
    and the S3 variables keep the names operators' configurations use."""
    recorder = _Recorder()
    Settings.from_env(recorder)
    listed = [variable.name for variable in Settings.variables()]
    assert sorted(recorder.asked) == sorted(listed)
    assert len(set(listed)) == len(listed)
    s3 = {
        f"{bucket}_S3_{key}"
        for bucket in ("RAW", "PROCESSED")
        for key in ("BUCKET", "ACCESS_KEY", "SECRET_KEY", "REGION", "ENDPOINT_URL")
    }
    assert s3 | {"S3_ENDPOINT_URL"} <= set(listed)


def test_the_hash_secret_is_ip_hash_secret_else_the_development_one() -> None:
    """Settings.hash_secret is IP_HASH_SECRET when set; without it (development) the development secret, which
    production refuses."""
    assert Settings().hash_secret == DEV_IP_HASH_SECRET
    assert Settings(ip_hash_secret="k" * 32).hash_secret == "k" * 32
    assert weak_secret(DEV_IP_HASH_SECRET) is not None


def test_parquet_without_pyarrow_stops_the_start_with_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow is an extra: where it is missing, a parquet format is refused at start naming the extra, while json,
    and an ingest-only process (which never exports), start as before."""
    monkeypatch.setattr("collector.settings.find_spec", lambda name: None)
    with pytest.raises(SettingsError, match=r"^PROCESSED_FORMAT=parquet needs pyarrow: .*collection-api\[parquet\]"):
        Settings.from_env({"PROCESSED_FORMAT": "parquet"})
    with pytest.raises(SettingsError, match=r"^EXPORT_FORMAT=parquet needs pyarrow"):
        Settings.from_env({"EXPORT_FORMAT": "parquet"})
    assert Settings.from_env({"EXPORT_FORMAT": "parquet", "ROLE": "ingest"}).role == "ingest"
    assert Settings.from_env({"EXPORT_FORMAT": "json"}).export_format == "json"


def test_a_geoip_database_that_is_not_a_file_stops_the_start(tmp_path: Any) -> None:
    """GEOIP_DATABASE must name a file where /collect is served; a pipeline-only process does not open it."""
    with pytest.raises(SettingsError, match="GEOIP_DATABASE"):
        Settings.from_env({"GEOIP_DATABASE": str(tmp_path / "missing.mmdb")})
    assert Settings.from_env({"GEOIP_DATABASE": str(tmp_path / "missing.mmdb"), "ROLE": "pipeline"}).role == "pipeline"
    (tmp_path / "city.mmdb").write_bytes(b"")
    assert Settings.from_env({"GEOIP_DATABASE": str(tmp_path / "city.mmdb")}).geoip_database == str(
        tmp_path / "city.mmdb"
    )
