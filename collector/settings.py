"""Settings: one frozen dataclass read once from the environment; no I/O here (only a lookup of whether pyarrow is
installed, when a format asks for parquet, pyiceberg, when an Iceberg catalog is set, and whether GEOIP_DATABASE
names a file).

A field's variable is its name upper-cased (a group's: its prefix and the name), and its caster follows from its
type (collector/casters.py): the type hints are the one list of what is read and how.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Any, Literal

from collector.casters import EnvPrefix, HttpUrl, LogLevel, PostgresUrl, UrlPath, Variable, variables_of
from collector.casters import Network as Network  # re-exported: the trusted proxies' type

# Paths of the fixed endpoints, which the configurable ones may not shadow.
RESERVED_PATHS = frozenset((
    "/health", "/livez", "/readyz", "/events/count", "/events/recent", "/dead-letters", "/openapi.json", "/metrics",
    "/export/run", "/export/status", "/export/config", "/process/run", "/process/status", "/pipeline/status",
    "/", "/cleanup/status", "/cleanup/run",
))  # fmt: skip

# The front doors PROTOCOLS may name (collector.edge.protocols serves all but collect).
PROTOCOLS = ("collect", "segment", "snowplow", "plausible")
# The doors' paths outside /v1/ (Segment's), which COLLECT_ALIAS_PATH and TRACKER_PATH must not take.
PROTOCOL_PATHS = frozenset(("/com.snowplowanalytics.snowplow/tp2", "/i", "/api/event"))

# Development only (production refuses to start without IP_HASH_SECRET): hashes made with it are not secret. Here,
# below every other module, so that Settings.hash_secret can fall back to it and the refusal below can name it.
DEV_IP_HASH_SECRET = "development-only-ip-hash-secret"

# A production secret: at least this long, with at least MIN_SECRET_DISTINCT different characters, and none of the
# values this repository ships (anyone can read them). tests/security/test_secrets.py finds every ADMIN_TOKEN and
# IP_HASH_SECRET value in the repository's deploy files and docs and checks that each one is here or refused anyway.
MIN_SECRET_CHARS = 32
MIN_SECRET_DISTINCT = 8
SHIPPED_SECRETS = frozenset((
    "replace_me", "compose-demo-admin-token", "compose-demo-ip-hash-secret", DEV_IP_HASH_SECRET,
))  # fmt: skip
# Placeholder words: a value containing one was copied from an example, not generated.
PLACEHOLDER_MARKERS = ("replace_me", "replace-me", "changeme", "change-me", "compose-demo", "development-only")


def weak_secret(value: str) -> str | None:
    """Why `value` cannot be a production secret (None when it can)."""
    lowered = value.strip().lower()
    if lowered in SHIPPED_SECRETS or any(marker in lowered for marker in PLACEHOLDER_MARKERS):
        return "is a value that ships in this repository (anyone can read it); generate one, e.g. openssl rand -hex 32"
    if len(value) < MIN_SECRET_CHARS:
        return f"must be at least {MIN_SECRET_CHARS} characters (e.g. openssl rand -hex 32)"
    if len(set(value)) < MIN_SECRET_DISTINCT:
        return f"must have at least {MIN_SECRET_DISTINCT} different characters (e.g. openssl rand -hex 32)"
    return None


# The share of DRAIN_TIMEOUT_S that requests in flight get at a graceful stop; the buffer's flush gets the rest.
CONNECTION_DRAIN_SHARE = 0.25


class SettingsError(ValueError):
    """A variable is missing or malformed; the message names it."""


AckMode = Literal["buffered", "durable"]
Environment = Literal["development", "production"]
Role = Literal["all", "ingest", "pipeline"]
ExportFormat = Literal["json", "ndjson.gz", "parquet"]


@dataclass(frozen=True, slots=True)
class BucketSettings:
    """One S3 bucket. No bucket: a directory under DATA_DIR/objects; no keys or region: the default AWS chain's."""

    bucket: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    region: str | None = None
    # Once in Settings, the resolved endpoint: the bucket's own, else S3_ENDPOINT_URL, else None (AWS).
    endpoint_url: HttpUrl | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the collector. Only `__main__` builds it from the environment; tests build it directly."""

    environment: Environment = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # What this process serves: `all` (ingest and the pipeline), `ingest` (HTTP ingest only: the pipeline's stages and
    # boto are never imported, nor started) or `pipeline` (export, processing and retention with their admin
    # endpoints and metrics; no /collect). docs/scaling.md says how to run the split.
    role: Role = "all"
    data_dir: str = ".data"
    log_level: LogLevel = "INFO"

    # None means "start the embedded PostgreSQL" (development only).
    database_url: PostgresUrl | None = None
    database_pool_size: int = 10
    database_max_overflow: int = 20

    # None means "authorize from authorized_domains_file" (development only).
    pixel_management_url: HttpUrl | None = None
    authorized_domains_file: str | None = None
    # Development: domains authorized on top of the defaults (localhost, 127.0.0.1, example.com) and the file above,
    # comma-separated, each `domain` (its client: client_<domain>, www. dropped) or `domain=client_id`.
    authorized_domains: tuple[str, ...] = ()
    auth_timeout_s: float = 2.0
    auth_cache_ttl_s: float = 300.0
    auth_negative_ttl_s: float = 30.0
    auth_stale_max_s: float = 3600.0
    auth_cache_size: int = 100_000

    admin_token: str | None = None
    ip_hash_secret: str | None = None
    trusted_proxies: tuple[Network, ...] = ()

    ack_mode: AckMode = "buffered"
    # The status of a buffered success (ACK_MODE=buffered). 200 by default: seed clients, and Segment, Snowplow,
    # PostHog or RudderStack clients, count only 200 as success; the body's `ack` ("buffered" / "durable") tells
    # the two promises apart. 202 (Accepted: queued, not yet stored) for whoever wants the status to say so.
    # A durable success is always 200.
    buffered_success_status: int = 200
    flush_max_events: int = 1000
    flush_interval_ms: int = 50
    # COPY transactions in flight at once, each on its own connection: one connection tops out below what the HTTP
    # side accepts in batches, and a durable flush mostly waits for its commit's fsync.
    flush_concurrency: int = 2
    buffer_max_events: int = 100_000
    buffer_max_bytes: int = 64 * 1024 * 1024
    drain_timeout_s: float = 20.0
    copy_timeout_s: float = 10.0
    journal_max_bytes: int = 1024 * 1024 * 1024
    journal_segment_bytes: int = 16 * 1024 * 1024

    max_body_bytes: int = 1024 * 1024
    max_events_per_request: int = 500
    max_event_bytes: int = 32 * 1024
    max_event_data_keys: int = 100
    # Encoded row bytes one request may add to storage (413 request_rows_too_large past it): a batch's wrapper
    # fields are copied into each of its events, so a small request could otherwise store hundreds of times its size.
    max_request_row_bytes: int = 2 * 1024 * 1024
    # Encoded bytes of a batch wrapper's inherited fields (ids, url, path, referrer, unknown fields) per event.
    max_inherited_bytes: int = 16 * 1024
    # Request line plus headers, per request (uvicorn's httptools parser has no limit of its own).
    max_header_bytes: int = 32 * 1024
    # From a request's first byte to its last: a client that trickles its headers or body is cut off with 408.
    read_timeout_s: float = 10.0
    # A new connection must send its first byte within this, and an idle keep-alive connection is closed after
    # KEEPALIVE_TIMEOUT_S: a socket that sends nothing holds a file descriptor and must not hold it for ever.
    first_byte_timeout_s: float = 10.0
    # Longer than the idle timeout of whatever proxies to us (AWS ALB 60 s, nginx's upstream keepalive_timeout
    # 60 s; the shipped deploy/nginx sets 60 s): the proxy must close an idle connection first. Were the collector
    # first, a request the proxy sends just as the collector closes would meet a reset (a 502 to the client).
    keepalive_timeout_s: float = 75.0
    # Open connections per worker; past it a new one gets an immediate 503 and is closed. The worker lowers it
    # further to what its file limit leaves after a reserve for the database pool, journal and logs.
    max_connections: int = 10_000

    # The browser edge: the GET/POST alias of /collect and the tracker script's path (short names that
    # ad-block lists do not target), and how long a browser may cache a CORS preflight answer.
    collect_alias_path: UrlPath = "/e"
    tracker_path: UrlPath = "/s.js"
    cors_max_age_s: int = 7200
    # Token buckets per worker: requests per second (0 = off) and the burst allowed above that rate.
    rate_limit_ip_per_s: float = 0.0
    rate_limit_ip_burst: int = 100
    rate_limit_site_per_s: float = 0.0
    rate_limit_site_burst: int = 1000
    # The front doors served (docs/protocols.md): `collect` (/collect, its alias and the pixel), `segment` (/v1/*:
    # Segment, RudderStack and Jitsu libraries), `snowplow` (tp2 POST and GET /i), `plausible` (/api/event).
    protocols: tuple[str, ...] = ("collect", "segment", "snowplow", "plausible")

    # Pipeline (the S3 stages; see pipeline/). No buckets: a directory store under DATA_DIR/objects.
    export_batch_size: int = 10_000
    export_interval_s: float = 60.0
    process_interval_s: float = 60.0
    # Failed attempts at processing a raw object, or one client's object of it, before it is quarantined (left alone
    # until an operator releases it; docs/pipeline.md). With the backoff (60 s doubling, at most 1 h), 10 is ~4 h.
    process_max_attempts: int = 10
    export_format: ExportFormat = "json"
    # Processed objects' format, whatever the raw one: json keeps the seed's layout; ndjson.gz and parquet are
    # partitioned client_id=<id>/date=<YYYY-MM-DD>/ for engines to prune (docs/pipeline.md).
    processed_format: ExportFormat = "json"
    retention_days: int = 7
    client_storage_file: str | None = None
    # The S3-compatible endpoint (MinIO, ...) of both buckets, unless one names its own (RAW_S3_ENDPOINT_URL, ...).
    s3_endpoint_url: HttpUrl | None = None
    # Two buckets, each from the variables of its prefix (RAW_S3_BUCKET, RAW_S3_ACCESS_KEY, ...); the endpoint each
    # holds is the resolved one (its own, else S3_ENDPOINT_URL).
    raw: Annotated[BucketSettings, EnvPrefix("RAW_S3_")] = BucketSettings()
    processed: Annotated[BucketSettings, EnvPrefix("PROCESSED_S3_")] = BucketSettings()
    # A raw object ends at EXPORT_BATCH_SIZE rows or this many bytes of encoded events, whichever comes first: what
    # export and processing hold in memory is bounded by one object, however large the backlog or its rows.
    export_max_object_bytes: int = 16 * 1024 * 1024
    # Optional Apache Iceberg table (docs/pipeline.md#iceberg): a SQLAlchemy URI of the SQL catalog
    # (postgresql://user:pass@host/db: psycopg 3 with SQLAlchemy 2.1+, so DATABASE_URL's form works as it is).
    # Set, processing also commits each client's processed rows to ICEBERG_TABLE, with files under ICEBERG_WAREHOUSE:
    # s3://bucket/prefix (reached with the processed bucket's keys, region and endpoint) or a local folder.
    iceberg_catalog_uri: str | None = field(default=None, repr=False)  # holds the catalog database's password
    iceberg_warehouse: str | None = None
    iceberg_table: str = "collector.events"  # namespace.table, in the SQL catalog named `collector`
    # A MaxMind-format City (or Country) database (GeoLite2, DB-IP lite) the operator supplies; unset: no geography
    # (docs/enrichment.md). Opened at start (memory-mapped), so a wrong path stops the collector then.
    geoip_database: str | None = None

    def __post_init__(self) -> None:
        # S3_ENDPOINT_URL is the shared fallback, resolved here once: whoever opens a bucket uses its endpoint_url.
        if self.s3_endpoint_url is not None:
            for name in ("raw", "processed"):
                bucket: BucketSettings = getattr(self, name)
                if bucket.endpoint_url is None:
                    object.__setattr__(self, name, replace(bucket, endpoint_url=self.s3_endpoint_url))

    @property
    def hash_secret(self) -> str:
        """The key of IP hashing: IP_HASH_SECRET, else (development only: production refuses to start without it)
        the development secret."""
        return self.ip_hash_secret or DEV_IP_HASH_SECRET

    @property
    def connection_drain_s(self) -> int:
        """Of DRAIN_TIMEOUT_S, what a graceful stop gives requests in flight (uvicorn counts whole seconds)."""
        return max(1, int(self.drain_timeout_s * CONNECTION_DRAIN_SHARE))

    @property
    def buffer_drain_s(self) -> float:
        """The rest of DRAIN_TIMEOUT_S: flushing (or journaling) the buffer once no request is left. The two run
        one after the other, so a stop takes at most DRAIN_TIMEOUT_S, within the grace period of the manifests."""
        return max(1.0, self.drain_timeout_s - self.connection_drain_s)

    @property
    def flush_interval_s(self) -> float:
        return self.flush_interval_ms / 1000.0

    @property
    def pool_min_size(self) -> int:
        return self.database_pool_size

    @property
    def pool_max_size(self) -> int:
        return self.database_pool_size + self.database_max_overflow

    @classmethod
    def variables(cls) -> tuple[Variable, ...]:
        """Every variable from_env reads, in field order, a group's in place (docs/configuration.md documents
        exactly these)."""
        return variables_of(cls)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read, cast and check every variable; raise SettingsError naming the first bad one."""
        values: dict[str, Any] = {}
        groups: dict[str, dict[str, Any]] = {}
        for variable in cls.variables():
            raw = environ.get(variable.name)
            if raw is None or raw.strip() == "":
                continue
            try:
                value = variable.cast(raw.strip())
            except (ValueError, TypeError) as exc:
                raise SettingsError(f"{variable.name}: {exc}") from None
            target = values if variable.group is None else groups.setdefault(variable.group, {})
            target[variable.field] = value
        defaults: dict[str, Any] = {f.name: f.default for f in fields(cls)}
        values.update({name: replace(defaults[name], **group) for name, group in groups.items()})
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Cross-field rules; raises SettingsError naming the variable."""
        positive = (
            "port", "workers", "database_pool_size", "flush_max_events", "flush_interval_ms", "flush_concurrency",
            "buffer_max_events", "buffer_max_bytes", "max_body_bytes", "max_events_per_request", "max_event_bytes",
            "export_batch_size", "auth_cache_size", "journal_max_bytes", "journal_segment_bytes", "copy_timeout_s",
            "export_interval_s", "process_interval_s", "retention_days", "export_max_object_bytes",
            "process_max_attempts", "max_event_data_keys", "max_request_row_bytes", "max_inherited_bytes",
            "max_header_bytes", "read_timeout_s", "rate_limit_ip_burst", "rate_limit_site_burst",
            "first_byte_timeout_s", "keepalive_timeout_s", "max_connections",
        )  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name.upper()}: must be a positive number")
        _check_success_status(self.buffered_success_status)
        if self.database_max_overflow < 0:
            raise SettingsError("DATABASE_MAX_OVERFLOW: must be zero or more")
        for name in ("rate_limit_ip_per_s", "rate_limit_site_per_s", "cors_max_age_s"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name.upper()}: must be zero or more")
        paths = {"/collect", self.collect_alias_path, self.tracker_path}
        if len(paths) != 3 or paths & RESERVED_PATHS:
            raise SettingsError("COLLECT_ALIAS_PATH, TRACKER_PATH: must differ from each other and from other paths")
        _check_domain_entries(self.authorized_domains)
        _check_protocols(self.protocols, (self.collect_alias_path, self.tracker_path))
        if self.flush_max_events > self.buffer_max_events:
            raise SettingsError("FLUSH_MAX_EVENTS: must not exceed BUFFER_MAX_EVENTS")
        _check_parquet(self)
        _check_iceberg(self)
        _check_geoip(self)
        if self.environment == "production":
            missing = [
                name
                for name in ("database_url", "pixel_management_url", "admin_token", "ip_hash_secret")
                if not getattr(self, name)
            ]
            if missing:
                raise SettingsError(
                    "ENVIRONMENT=production needs "
                    + ", ".join(m.upper() for m in missing)
                    + " (no embedded defaults in production)"
                )
            # The admin token guards every operator endpoint and the hash secret is all that keeps a hashed IP
            # from being reversed by trying the 2^32 addresses: a guessable or published one is no secret.
            for name in ("admin_token", "ip_hash_secret"):
                reason = weak_secret(getattr(self, name))
                if reason is not None:
                    raise SettingsError(f"{name.upper()}: {reason}")


def _check_parquet(settings: Settings) -> None:
    """parquet needs pyarrow, an extra (collection-api[parquet]; the image has it): say so at start, not at export."""
    for name in ("export_format", "processed_format"):
        if getattr(settings, name) == "parquet" and settings.role != "ingest" and find_spec("pyarrow") is None:
            raise SettingsError(
                f"{name.upper()}=parquet needs pyarrow: pip install 'collection-api[parquet]' (the image has it)"
            )


ICEBERG_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\.[A-Za-z_][A-Za-z0-9_]{0,127}")


def _check_iceberg(settings: Settings) -> None:
    """ICEBERG_CATALOG_URI needs a warehouse, a namespace.table name and pyiceberg (collection-api[iceberg]), in
    the roles that process; said at start, not at the first commit."""
    if settings.iceberg_catalog_uri is None:
        return
    scheme = settings.iceberg_catalog_uri.partition("://")[0]
    if scheme.split("+")[0] not in ("postgresql", "sqlite"):
        raise SettingsError("ICEBERG_CATALOG_URI: must be a SQLAlchemy URI, postgresql://... (not postgres://)")
    warehouse = settings.iceberg_warehouse or ""
    if not (warehouse.startswith(("s3://", "file:///")) or warehouse.startswith("/")):
        raise SettingsError("ICEBERG_WAREHOUSE: ICEBERG_CATALOG_URI needs an s3://bucket/prefix, file:/// or /path")
    if not ICEBERG_TABLE_NAME.fullmatch(settings.iceberg_table):
        raise SettingsError("ICEBERG_TABLE: must be namespace.table (letters, digits, underscores)")
    needed = ("pyiceberg", "sqlalchemy", *(("psycopg",) if scheme in ("postgresql", "postgresql+psycopg") else ()))
    missing = [name for name in needed if find_spec(name) is None]
    if settings.role != "ingest" and missing:
        raise SettingsError(f"ICEBERG_CATALOG_URI needs {', '.join(missing)}: pip install 'collection-api[iceberg]'")


def _check_protocols(protocols: tuple[str, ...], own_paths: tuple[str, ...]) -> None:
    """PROTOCOLS names known front doors, at least one; the alias and the tracker take none of their paths."""
    if not protocols or not set(protocols) <= set(PROTOCOLS):
        raise SettingsError(f"PROTOCOLS: must be a comma list of {', '.join(PROTOCOLS)} (at least one)")
    if any(p.startswith("/v1/") or p in PROTOCOL_PATHS for p in own_paths):
        raise SettingsError("COLLECT_ALIAS_PATH, TRACKER_PATH: must not be a front door's path (/v1/..., /i, ...)")


def _check_geoip(settings: Settings) -> None:
    """A GEOIP_DATABASE that is not there: say so at start, not with every row's geography missing."""
    if (
        settings.geoip_database is not None
        and settings.role != "pipeline"
        and not Path(settings.geoip_database).is_file()
    ):
        raise SettingsError(f"GEOIP_DATABASE: {settings.geoip_database} is not a file")


def _check_success_status(status: int) -> None:
    """200 (what clients written for the seed count as success) or 202; no other status means success to them."""
    if status not in (200, 202):
        raise SettingsError("BUFFERED_SUCCESS_STATUS: must be 200 (the default) or 202")


def _check_domain_entries(entries: tuple[str, ...]) -> None:
    """The shape of AUTHORIZED_DOMAINS entries (the directory checks the host names and the client ids)."""
    for entry in entries:
        name, eq, client_id = entry.partition("=")
        if not name or (eq and not client_id) or "=" in client_id or any(c.isspace() for c in entry):
            raise SettingsError(f"AUTHORIZED_DOMAINS: {entry!r} is not `domain` or `domain=client_id`")


def redact_url(url: str) -> str:
    """The database URL with its password hidden, for log lines."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, _, password = creds.partition(":")
    return f"{scheme}://{user}{':***' if password else ''}@{host}"
