"""deploy/Dockerfile, deploy/docker-compose.yml and the pixel-management stand-in (Docker cannot run here: the
files are parsed and checked, and the stand-in is run for real)."""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from collector.settings import Settings
from tests.conftest import MakeApp
from tests.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
STANDIN = DEPLOY / "pixel-management" / "standin.py"
PIPELINE_ENV = {
    "RAW_S3_BUCKET", "PROCESSED_S3_BUCKET", "S3_ENDPOINT_URL", "RAW_S3_ACCESS_KEY", "RAW_S3_SECRET_KEY",
    "RAW_S3_REGION", "PROCESSED_S3_ACCESS_KEY", "PROCESSED_S3_SECRET_KEY", "PROCESSED_S3_REGION",
    "EXPORT_INTERVAL_S", "PROCESS_INTERVAL_S", "EXPORT_FORMAT", "RETENTION_DAYS", "IP_HASH_SECRET", "ADMIN_TOKEN",
    "PIXEL_MANAGEMENT_URL", "DATABASE_URL",
}  # fmt: skip


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, args = line.strip().partition(" ")
            out.append((instruction.upper(), args.strip()))
    return out


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


# What an operator exports before `docker compose up` (the file has no value of its own for these).
REQUIRED = {"ADMIN_TOKEN": secrets.token_hex(32), "IP_HASH_SECRET": secrets.token_hex(32)}


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} as `docker compose up` resolves it with only the REQUIRED variables set
    (${VAR:?message} is an error when VAR is unset)."""
    value = re.sub(r"\$\{([A-Z_]+):\?[^}]*\}", lambda m: REQUIRED[m.group(1)], value)
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_compose_requires_the_secrets_from_the_environment_and_ships_none() -> None:
    """ADMIN_TOKEN and IP_HASH_SECRET come from the environment with no default (compose stops without them), the
    collector is published on loopback only, and Prometheus gets the token as a compose secret."""
    services = compose()["services"]
    env = services["collector"]["environment"]
    for name in ("ADMIN_TOKEN", "IP_HASH_SECRET"):
        assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", env[name]), env[name]
    assert all(str(port).startswith("127.0.0.1:") for port in services["collector"]["ports"])
    assert "admin_token" in services["prometheus"]["secrets"]
    assert compose()["secrets"]["admin_token"] == {"environment": "ADMIN_TOKEN"}
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "collector")
    assert job["authorization"]["credentials_file"] == "/run/secrets/admin_token"


def test_dockerfile_runs_the_collector_as_a_non_root_user_from_a_slim_image() -> None:
    """Final stage: a slim Python base, a non-root USER, STOPSIGNAL SIGTERM, a healthcheck, `python -m collector`."""
    instructions = dockerfile_instructions()
    final = instructions[max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM") :]
    assert re.fullmatch(r"python:3\.1[1-9]-slim", final[0][1]), final[0]
    users = [args for ins, args in final if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    assert ("STOPSIGNAL", "SIGTERM") in final
    assert any(ins == "HEALTHCHECK" and "/livez" in args for ins, args in final)
    assert ("CMD", '["python", "-m", "collector"]') in final
    assert ("EXPOSE", "8000") in final
    env = " ".join(args for ins, args in final if ins == "ENV")
    assert "HOST=0.0.0.0" in env and "ENVIRONMENT=production" in env


def test_dockerfile_installs_no_dev_dependencies() -> None:
    """The image gets the runtime dependencies only: no [dev] or [embedded] extra, no test tools."""
    runs = " ".join(args for ins, args in dockerfile_instructions() if ins == "RUN")
    assert "pip" in runs
    for forbidden in ("[dev]", "[embedded]", "pytest", "ruff", "mypy", "pgserver"):
        assert forbidden not in runs, forbidden
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".data", ".git"} <= set(ignored)


def test_compose_has_the_whole_pipeline_with_healthchecks() -> None:
    """PostgreSQL, MinIO (+ bucket creation), the stand-in, the collector and Prometheus; every service others wait
    on as healthy has a healthcheck."""
    services = compose()["services"]
    assert {"postgres", "minio", "minio-init", "pixel-management", "collector", "prometheus"} <= set(services)
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
    collector = services["collector"]
    assert collector["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert collector["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(collector["healthcheck"]["test"])
    assert collector["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / collector["build"]["context"] / collector["build"]["dockerfile"]).is_file()


def test_compose_collector_environment_is_a_valid_production_configuration() -> None:
    """Every pipeline variable is set, and Settings.from_env accepts the environment as compose resolves it."""
    collector = compose()["services"]["collector"]
    env = {k: interpolate(str(v)) for k, v in collector["environment"].items()}
    assert env["ENVIRONMENT"] == "production"
    assert PIPELINE_ENV <= set(env), PIPELINE_ENV - set(env)
    assert env["EXPORT_FORMAT"] in ("json", "ndjson.gz")
    settings = Settings.from_env(env)
    assert settings.environment == "production" and settings.workers == 2
    assert settings.pixel_management_url == "http://pixel-management:8080"
    assert settings.database_url is not None and "@postgres:5432/" in settings.database_url
    grace = int(str(collector["stop_grace_period"]).removesuffix("s"))
    assert grace > settings.drain_timeout_s, "docker stop must leave the drain its time"
    assert collector["stop_signal"] == "SIGTERM"


def test_compose_creates_the_buckets_the_collector_uses() -> None:
    """minio-init makes both the raw and the processed bucket named in the collector's environment."""
    services = compose()["services"]
    env = services["collector"]["environment"]
    script = " ".join(services["minio-init"]["entrypoint"])
    for bucket in (env["RAW_S3_BUCKET"], env["PROCESSED_S3_BUCKET"]):
        assert f"mc mb --ignore-existing local/{bucket}" in script
    assert env["S3_ENDPOINT_URL"] == "http://minio:9000"


def test_compose_prometheus_scrapes_the_collector_and_loads_the_rules() -> None:
    """Prometheus mounts prometheus.yml and alerts.yml, and scrapes the collector's service name and port."""
    services = compose()["services"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in services["prometheus"]["volumes"] if m.startswith("./")}
    assert mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    for source in mounts:
        assert (DEPLOY / source).exists(), source
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert "alerts.yml" in config["rule_files"]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "collector")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    port = services["collector"]["environment"].get("PORT", "8000")
    assert job["static_configs"][0]["targets"] == [f"collector:{port}", f"pipeline:{port}"]


def test_compose_mounts_point_at_files_in_the_repository() -> None:
    """Every ./relative bind mount of the compose file exists (a typo would mount an empty directory)."""
    for name, service in compose()["services"].items():
        for mount in service.get("volumes", []):
            if mount.startswith("./"):
                assert (DEPLOY / mount.split(":")[0]).exists(), f"{name}: {mount}"
    standin = compose()["services"]["pixel-management"]
    assert standin["command"][:2] == ["python", "/srv/standin.py"]


@pytest.fixture
def standin() -> Iterator[str]:
    """The stand-in running from deploy/ on a loopback port, as compose runs it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(STANDIN), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        assert b"pixel-management stand-in" in proc.stdout.readline()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        code = proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
        assert code == 0, "the stand-in did not stop cleanly on SIGTERM"


async def test_standin_serves_the_documented_contract(standin: str) -> None:
    """Domain and client lookups answer 200 / 404 / 400 with the documented bodies; /domains/all lists them."""
    async with httpx.AsyncClient(base_url=standin) as client:
        shop = await client.get("/api/v1/config/domain/shop.acme.com")
        assert shop.status_code == 200 and shop.headers["content-type"] == "application/json"
        body = shop.json()
        assert set(body) == {"client_id", "privacy_level", "ip_collection", "consent", "features", "deployment"}
        assert (body["client_id"], body["privacy_level"]) == ("client_acme_corp", "standard")
        eu = (await client.get("/api/v1/config/domain/EU-Shop.example")).json()
        assert eu["privacy_level"] == "gdpr" and eu["ip_collection"]["hash_required"] is True
        assert eu["ip_collection"]["salt"] and eu["consent"]["default_behavior"] == "opt_out"
        missing = await client.get("/api/v1/config/domain/unknown.example")
        assert (missing.status_code, missing.json()) == (404, {"detail": "Domain not authorized"})
        assert (await client.get("/api/v1/config/domain/ab")).status_code == 400
        client_config = await client.get("/api/v1/config/client/client_clinic")
        assert client_config.status_code == 200 and client_config.json()["privacy_level"] == "hipaa"
        no_client = await client.get("/api/v1/config/client/client_nobody")
        assert (no_client.status_code, no_client.json()) == (404, {"detail": "Client not found"})
        everything = (await client.get("/api/v1/domains/all")).json()
        assert everything["count"] == len(everything["domains"]) >= 4
        assert "shop.acme.com" in everything["domains"]


async def test_collector_authorizes_against_the_standin(standin: str, make_app: MakeApp) -> None:
    """A real collector pointed at the stand-in attributes its domains and refuses others, as in compose."""
    running = await make_app(pixel_management_url=standin)
    ok = await running.post({"eventType": "pageview", "siteId": "shop.acme.com"})
    assert (ok.status_code, ok.json()["client_id"]) == (200, "client_acme_corp")
    refused = await running.post({"eventType": "pageview", "siteId": "unknown.example"})
    assert (refused.status_code, refused.json()["error"]) == (403, "domain_not_authorized")
    await asyncio.wait_for(running.services.buffer.drain(), 10)


def test_compose_splits_ingest_and_the_pipeline_into_two_roles() -> None:
    """The published collector runs ROLE=ingest, a pipeline service ROLE=pipeline with the same settings otherwise,
    and both are valid production configurations."""
    services = compose()["services"]
    ingest, pipeline = services["collector"]["environment"], services["pipeline"]["environment"]
    assert (ingest["ROLE"], pipeline["ROLE"]) == ("ingest", "pipeline")
    shared = set(ingest) - {"ROLE", "WORKERS"}
    assert {k: ingest[k] for k in shared} == {k: pipeline[k] for k in shared}
    assert "ports" not in services["pipeline"] and "/readyz" in " ".join(services["pipeline"]["healthcheck"]["test"])
    for env in (ingest, pipeline):
        assert Settings.from_env({k: interpolate(str(v)) for k, v in env.items()}).role == env["ROLE"]
