"""deploy/k8s/base (kustomize) and deploy/systemd: parsed and checked for what a graceful, observable deploy needs."""

from __future__ import annotations

import configparser
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.settings import Settings, SettingsError

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BASE = DEPLOY / "k8s" / "base"
SECRET_KEYS = {
    "DATABASE_URL", "ADMIN_TOKEN", "IP_HASH_SECRET", "RAW_S3_ACCESS_KEY", "RAW_S3_SECRET_KEY",
    "PROCESSED_S3_ACCESS_KEY", "PROCESSED_S3_SECRET_KEY",
}  # fmt: skip


def documents() -> dict[str, dict[str, Any]]:
    """The base's resources by kind (each listed in kustomization.yaml, one document per file); a second Deployment
    (the pipeline role's) under `Deployment/<name>`, the first being the ingest collector's."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    found: dict[str, dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((BASE / resource).read_text()):
            if doc["kind"] == "Deployment" and "Deployment" in found:
                found[f"Deployment/{doc['metadata']['name']}"] = doc
                continue
            assert doc["kind"] not in found, f"two {doc['kind']} resources"
            found[doc["kind"]] = doc
    return found


def container() -> dict[str, Any]:
    spec = documents()["Deployment"]["spec"]["template"]["spec"]
    collector: dict[str, Any] = spec["containers"][0]
    return collector


def env_of_base() -> dict[str, str]:
    """The environment the pod would get from the base alone: the ConfigMap and the Secret's placeholders."""
    docs = documents()
    env = {**docs["ConfigMap"]["data"], **docs["Secret"]["stringData"]}
    return {k: str(v) for k, v in env.items()}


def settings_of_base() -> Settings:
    """The Settings the pod would read once an overlay replaced each placeholder with a generated value."""
    env = {k: v.replace("REPLACE_ME", secrets.token_hex(32)) for k, v in env_of_base().items()}
    return Settings.from_env(env)


def test_the_base_with_its_placeholders_does_not_start() -> None:
    """Applied without an overlay, the base's REPLACE_ME secrets stop the start with a message naming the variable."""
    with pytest.raises(SettingsError, match=r"^ADMIN_TOKEN: "):
        Settings.from_env(env_of_base())


def test_kustomize_base_lists_every_resource_it_needs() -> None:
    """Deployment, Service, HPA, ConfigMap, Secret and a PodDisruptionBudget, each file present."""
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "Secret", "PodDisruptionBudget"} <= set(
        documents()
    )


def test_kubectl_kustomize_builds_the_base() -> None:
    """kubectl kustomize renders the base (skipped where kubectl is not installed)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found: the base is still parsed by the other tests")
    result = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(result.stdout)}
    assert "Deployment" in kinds and "HorizontalPodAutoscaler" in kinds


def test_deployment_probes_readiness_and_liveness_on_the_service_port() -> None:
    """readinessProbe GET /readyz and livenessProbe GET /livez on the container's http port (8000)."""
    c = container()
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["readinessProbe"]["httpGet"]["port"] in ("http", 8000) and ports["http"] == settings_of_base().port


def test_termination_grace_outlasts_the_prestop_pause_and_the_drain() -> None:
    """terminationGracePeriodSeconds > preStop pause + the connection drain + the buffer drain (which run one after
    the other), and preStop pauses before SIGTERM."""
    spec = documents()["Deployment"]["spec"]["template"]["spec"]
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = int(command[1])
    assert pause >= 5, "the load balancer needs a few seconds to stop sending"
    settings = settings_of_base()
    assert spec["terminationGracePeriodSeconds"] > pause + settings.connection_drain_s + settings.buffer_drain_s


def test_deployment_requests_resources_and_runs_as_non_root() -> None:
    """CPU and memory requests are set (the HPA needs the CPU one), a memory limit too, and the pod is non-root."""
    c = container()
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
    pod = documents()["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert settings_of_base().data_dir in mounts, "DATA_DIR (the journal) must be a writable volume"


def test_config_and_secrets_are_split() -> None:
    """Credentials and keys come from the Secret only; the ConfigMap holds none; the pod reads both."""
    docs = documents()
    config, secret = docs["ConfigMap"]["data"], docs["Secret"]["stringData"]
    assert set(secret) == SECRET_KEYS
    assert not SECRET_KEYS & set(config)
    refs = container()["envFrom"]
    assert {"configMapRef": {"name": docs["ConfigMap"]["metadata"]["name"]}} in refs
    assert {"secretRef": {"name": docs["Secret"]["metadata"]["name"]}} in refs
    settings = settings_of_base()
    assert settings.environment == "production" and settings.workers == 1


def test_service_and_hpa_target_the_deployment() -> None:
    """The Service selects the pods and targets the http port; the HPA scales the Deployment on CPU."""
    docs = documents()
    deployment = docs["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = docs["Service"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"][0]["targetPort"] == "http"
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "collector"}
    assert deployment["metadata"]["name"] == "collector"
    assert 1 < hpa["minReplicas"] < hpa["maxReplicas"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"


def unit(name: str = "collection-api.service") -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


def test_systemd_unit_runs_the_collector_and_waits_for_the_drain() -> None:
    """ExecStart runs python -m collector as a service user; SIGTERM, and a stop timeout longer than the drain."""
    service = unit()["Service"]
    assert service["ExecStart"].endswith("/.venv/bin/python -m collector")
    assert service["User"] not in ("root", "0")
    assert service["KillSignal"] == "SIGTERM"
    timeout = int(service["TimeoutStopSec"])
    assert timeout > Settings().connection_drain_s + Settings().buffer_drain_s
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"].startswith("/etc/")
    assert "DATA_DIR=/var/lib/collection-api" in service["Environment"]
    assert service["StateDirectory"] == "collection-api"
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_the_base_runs_ingest_and_the_pipeline_as_two_deployments() -> None:
    """The Service and HPA's Deployment runs ROLE=ingest; a one-replica pipeline Deployment runs ROLE=pipeline, with
    labels the Service does not select (no /collect traffic reaches it) and a readiness probe."""
    docs = documents()
    ingest, pipeline = docs["Deployment"], docs["Deployment/collector-pipeline"]

    def role(deployment: dict[str, Any]) -> str:
        env = deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])
        return str(next(e["value"] for e in env if e["name"] == "ROLE"))

    assert (role(ingest), role(pipeline)) == ("ingest", "pipeline")
    assert pipeline["spec"]["replicas"] == 1
    selector = docs["Service"]["spec"]["selector"]
    labels = pipeline["spec"]["template"]["metadata"]["labels"]
    assert any(labels.get(k) != v for k, v in selector.items())
    probe = pipeline["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/readyz"


def test_systemd_pipeline_unit_runs_the_pipeline_role_beside_the_collector() -> None:
    """The pipeline unit runs the same command with ROLE=pipeline, its own port and its own state folder."""
    service, collector = unit("collection-api-pipeline.service")["Service"], unit()["Service"]
    assert service["ExecStart"] == collector["ExecStart"] and service["EnvironmentFile"] == collector["EnvironmentFile"]
    environment = dict(item.split("=", 1) for item in service["Environment"].split())
    assert environment["ROLE"] == "pipeline" and environment["PORT"] != "8000"
    assert environment["DATA_DIR"] != "/var/lib/collection-api"
    assert service["StateDirectory"] == "collection-api-pipeline"
