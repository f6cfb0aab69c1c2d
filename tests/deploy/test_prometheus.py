"""deploy/prometheus and deploy/grafana: the rules load and fire as tested, and every expression names real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import Running
from tests.scrape import families, run_promtool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "collection-api.json"

# Series Prometheus itself makes for every target.
SCRAPE_SERIES = {"up"}
# PromQL words that look like metric names.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "by", "without", "and", "or", "unless", "on", "ignoring",
    "histogram_quantile", "time", "le", "group_left", "group_right", "bool", "offset", "abs", "clamp_min",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (label names inside {...} and by (...) are left out)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r'"[^"]*"', "", expr)
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr)) - PROMQL_WORDS
    return {n for n in names if not n.startswith("$")}


def known_names(scrape: str) -> set[str]:
    """Names a query may use: the scrape's families (a histogram's _bucket/_sum/_count too, a counter's _total)."""
    known = set(SCRAPE_SERIES)
    for family in families(scrape):
        known |= {family, f"{family}_bucket", f"{family}_sum", f"{family}_count", f"{family}_total"}
    return known


async def real_scrape(running: Running) -> str:
    assert (await running.post({"eventType": "x", "siteId": "acme.com"})).status_code == 200
    await running.services.buffer.drain()
    return (await running.client.get("/metrics")).text


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_rules_and_config_pass_promtool_check(tmp_path: Path) -> None:
    """promtool check rules and check config accept deploy/prometheus (skipped without promtool)."""
    checked = run_promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The config reads the admin token from the compose secret's file, which promtool wants to exist: check a copy
    # (beside a copy of the rules it loads) that points at a stand-in token file.
    token = tmp_path / "admin_token"
    token.write_text("a-token\n")
    text = (PROMETHEUS / "prometheus.yml").read_text()
    assert "/run/secrets/admin_token" in text
    (tmp_path / "prometheus.yml").write_text(text.replace("/run/secrets/admin_token", str(token)))
    (tmp_path / "alerts.yml").write_text((PROMETHEUS / "alerts.yml").read_text())
    config = run_promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_alert_unit_tests_pass_promtool_test_rules() -> None:
    """promtool test rules runs alerts_test.yml: each alert fires on its synthetic series and clears after."""
    result = run_promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_clearing() -> None:
    """alerts_test.yml makes every alert of alerts.yml fire at one time and be absent at a later one."""
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired: dict[str, list[str]] = {}
    cleared: dict[str, list[str]] = {}
    for test in tests:
        for case in test.get("alert_rule_test", []):
            seen = fired if case.get("exp_alerts") else cleared
            seen.setdefault(case["alertname"], []).append(case["eval_time"])
    minutes = lambda t: int(t.removesuffix("m"))  # noqa: E731
    for rule in rules():
        name = rule["alert"]
        assert name in fired, f"{name} is never tested firing"
        assert any(minutes(c) > minutes(f) for c in cleared.get(name, []) for f in fired[name]), (
            f"{name} is never tested clearing after it fired"
        )


def test_alerts_cover_the_seed_and_the_issue() -> None:
    """The seed's five alerts and the issue's four are all there, each with a severity and a summary."""
    names = {rule["alert"] for rule in rules()}
    assert names >= {
        "CollectorBulkInsertFailures", "CollectorAttributionFailures", "CollectorDatabasePoolExhausted",
        "CollectorExportLag", "CollectorSmallBatches",
        "CollectorBufferFilling", "CollectorJournalNotEmpty", "CollectorNotReady", "CollectorProcessingLag",
    }  # fmt: skip
    for rule in rules():
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"]


async def test_alert_expressions_name_metrics_the_service_exports(running: Running) -> None:
    """Every metric an alert reads is in a real scrape or is one of the pipeline's announced metrics."""
    known = known_names(await real_scrape(running))
    for rule in rules():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule['alert']} reads unknown metrics {unknown}"


def test_dashboard_imports_as_is() -> None:
    """The dashboard is plain JSON with no id, a uid, a Prometheus data source variable, and panels that use it."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["id"] is None and dashboard["uid"] and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    assert "__inputs" not in dashboard, "an import would then ask for inputs"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])


def test_dashboard_has_the_panels_the_issue_asks_for() -> None:
    """Throughput, rejections by reason, flush size and latency, buffer depth, export lag and auth cache hit rate."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = {p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in dashboard["panels"]}
    wanted = {
        "Throughput": "collector_events_accepted_total",
        "Rejections by reason": "by (reason) (rate(collector_events_rejected_total",
        "Flush batch size": "collector_flush_batch_size_events",
        "Flush latency": "collector_flush_duration_seconds_bucket",
        "Buffer depth": "collector_buffer_events",
        "Export and processing lag": "collector_pipeline_lag_seconds",
        "Authorization cache hit rate": "collector_auth_cache_hits_total",
    }
    for title, needle in wanted.items():
        matching = [expr for name, expr in exprs.items() if name.startswith(title)]
        assert matching and needle in matching[0], f"no panel {title!r} reading {needle}"


async def test_dashboard_expressions_name_metrics_the_service_exports(running: Running) -> None:
    """Every metric a panel reads is in a real scrape or is one of the pipeline's announced metrics."""
    known = known_names(await real_scrape(running))
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            unknown = metric_names(target["expr"]) - known
            assert not unknown, f"panel {panel['title']!r} reads unknown metrics {unknown}"
