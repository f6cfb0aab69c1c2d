"""The OpenAPI 3 description of every endpoint, served at /openapi.json (and fuzzed by `make fuzz`).

One entry in PATHS per fixed path; the configurable paths (the /collect alias, the tracker script) are added by
document(settings). A new endpoint is one more PATHS entry.
"""

from __future__ import annotations

from typing import Any

from collector import __version__
from collector.edge.openapi_schemas import SCHEMAS, ref
from collector.settings import Settings

JSON = "application/json"


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(ref("Error"), description)


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


ADMIN: list[dict[str, list[str]]] = [{"bearer": []}]
ADMIN_ERRORS = {
    "401": _error("ADMIN_TOKEN is set and the request lacks `Authorization: Bearer <ADMIN_TOKEN>`"),
    "403": _error("ADMIN_TOKEN is unset (development) and the client is not on loopback"),
    "422": _error("a query parameter is malformed (`invalid_parameter`)"),
}
CLIENT_ID = _query("client_id", {"type": "string", "minLength": 1, "maxLength": 128}, "only this client's data")
LIMIT = _query("limit", {"type": "integer", "minimum": 1, "default": 10}, "how many (at most 1000)")
TEXT = {"type": "string", "maxLength": 256}
EVENT_FIELDS = ("eventType", "eventId", "sessionId", "visitorId", "siteId", "url", "path", "referrer", "timestamp")

COLLECT: dict[str, Any] = {
    "post": {
        "summary": "Send one event or a batch (JSON; as text/plain for sendBeacon; optionally gzip-encoded)",
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": ref("EventOrBatch")}, "text/plain": {"schema": {"type": "string"}}},
        },
        "responses": {
            "200": _json(ref("Accepted"), "success: `ack` says queued in memory (`buffered`) or committed (`durable`)"),
            "202": _json(ref("Accepted"), "a buffered success when BUFFERED_SUCCESS_STATUS=202 (`ack: buffered`)"),
            "400": _error("`invalid_json` or `invalid_encoding`"),
            "403": _error("`domain_not_authorized`, or `origin_mismatch` (Origin/Referer is not the site)"),
            "405": _error("`method_not_allowed`"),
            "408": _error("`request_timeout`: the body was not received within READ_TIMEOUT_S"),
            "413": _error(
                "`body_too_large` (also once decompressed), or `request_rows_too_large`: the events' rows would"
                " exceed MAX_REQUEST_ROW_BYTES"
            ),
            "415": _error("`unsupported_media_type`: not JSON or text/plain, or an unknown Content-Encoding"),
            "422": _error(
                "`invalid_event`: no valid event, no domain, too many events; `invalid_site`: siteId is no host name"
            ),
            "429": _error("`rate_limited` (Retry-After)"),
            "503": _error("`buffer_full`, `shutting_down`, `authorization_unavailable` (Retry-After)"),
        },
    },
    "get": {
        "summary": "The pixel: one event in query parameters named like the JSON fields; always a 1x1 GIF",
        "parameters": [
            *(_query(name, {"type": "string"}, f"the event's `{name}`") for name in EVENT_FIELDS),
            _query("eventData", {"type": "string"}, "the event's `eventData` as a JSON object string"),
        ],
        "responses": {
            "200": {
                "description": "the GIF, accepted or not (`X-Collector-Status` or `X-Collector-Rejected: <error>`)",
                "content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    },
    "options": {
        "summary": "CORS preflight: allowed for origins whose host (or a parent domain) is an authorized site",
        "parameters": [{"name": "Origin", "in": "header", "required": False, "schema": {"type": "string"}}],
        "responses": {
            "204": {"description": "allowed (with Access-Control-* headers), or no Origin given"},
            "403": _error("`origin_mismatch`: the origin is not an authorized site (no CORS headers)"),
            "503": _error("`authorization_unavailable`"),
        },
    },
}

PATHS: dict[str, dict[str, Any]] = {
    "/": {
        "get": {
            "summary": "The service's name, version and links (what load balancers probe by default; public)",
            "responses": {"200": _json(ref("Index"), "this service")},
        }
    },
    "/collect": COLLECT,
    "/health": {
        "get": {
            "summary": "Database, buffer, flusher, authorization and event accounting of the answering worker"
            " (in production only `status` unless the admin token comes with the request)",
            "responses": {
                "200": _json({"anyOf": [ref("Health"), ref("Status")]}, "healthy"),
                "503": _json({"anyOf": [ref("Health"), ref("Status")]}, "PostgreSQL does not answer"),
            },
        }
    },
    "/livez": {"get": {"summary": "The process is alive", "responses": {"200": _json(ref("Status"), "alive")}}},
    "/readyz": {
        "get": {
            "summary": "Ready to take events",
            "responses": {
                "200": _json(ref("Status"), "ready"),
                "503": _json(ref("Status"), "draining, buffer full or PostgreSQL down (`reasons`)"),
            },
        }
    },
    "/events/count": {
        "get": {
            "summary": "Admin: events stored (all, or one client's per day)",
            "security": ADMIN,
            "parameters": [CLIENT_ID],
            "responses": {"200": _json(ref("Count"), "the counts"), **ADMIN_ERRORS},
        }
    },
    "/events/recent": {
        "get": {
            "summary": "Admin: the newest events",
            "security": ADMIN,
            "parameters": [LIMIT, CLIENT_ID],
            "responses": {
                "200": _json({"type": "array", "items": ref("RecentEvent")}, "newest first"),
                **ADMIN_ERRORS,
            },
        }
    },
    "/dead-letters": {
        "get": {
            "summary": "Admin: the newest samples of rejected events",
            "security": ADMIN,
            "parameters": [
                LIMIT,
                CLIENT_ID,
                _query("reason", TEXT, "only this rejection reason"),
                _query("domain", TEXT, "only this domain"),
            ],
            "responses": {
                "200": _json({"type": "array", "items": ref("DeadLetter")}, "newest first"),
                **ADMIN_ERRORS,
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document (admin only in production)",
            "responses": {"200": _json({"type": "object"}, "the OpenAPI document"), **ADMIN_ERRORS},
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics of every worker (text exposition format); admin only in production",
            "responses": {
                "200": {"description": "the scrape", "content": {"text/plain": {"schema": {"type": "string"}}}},
                **ADMIN_ERRORS,
            },
        }
    },
    "/export/run": {
        "post": {
            "summary": "Admin: export new rows to the raw store now",
            "security": ADMIN,
            "responses": {
                "200": _json({"type": "object", "required": ["status", "events_exported", "objects"]}, "exported"),
                "409": _error("`stage_running`: another worker or instance is exporting"),
                "503": _error("`object_store_unavailable`: the upload failed; nothing marked, retried next run"),
                **ADMIN_ERRORS,
            },
        }
    },
    "/export/status": {
        "get": {
            "summary": "Admin: exported and pending events, the last object, the export lag",
            "security": ADMIN,
            "responses": {
                "200": _json({"type": "object", "required": ["pending_events", "lag_seconds"]}, "status"),
                **ADMIN_ERRORS,
            },
        }
    },
    "/export/config": {
        "get": {
            "summary": "Admin: stores, format, batch size, intervals (never credentials)",
            "security": ADMIN,
            "responses": {"200": _json({"type": "object"}, "the configuration"), **ADMIN_ERRORS},
        }
    },
    "/process/run": {
        "post": {
            "summary": "Admin: process exported raw objects into per-client objects now",
            "security": ADMIN,
            "responses": {
                "200": _json({"type": "object", "required": ["status", "events_processed"]}, "processed"),
                "409": _error("`stage_running`: another worker or instance is processing"),
                **ADMIN_ERRORS,
            },
        }
    },
    "/process/status": {
        "get": {
            "summary": "Admin: raw objects waiting for processing, the processing lag",
            "security": ADMIN,
            "responses": {
                "200": _json({"type": "object", "required": ["unprocessed_raw_objects"]}, "status"),
                **ADMIN_ERRORS,
            },
        }
    },
    "/pipeline/status": {
        "get": {
            "summary": "Admin: both stages, retention, the oldest unexported event's age",
            "security": ADMIN,
            "responses": {
                "200": _json({"type": "object", "required": ["export", "process", "retention"]}, "status"),
                **ADMIN_ERRORS,
            },
        }
    },
    "/cleanup/status": {
        "get": {
            "summary": "Admin: retention (the seed's cleanup): day partitions past RETENTION_DAYS, the last run",
            "security": ADMIN,
            "responses": {
                "200": _json(
                    {"type": "object", "required": ["retention_days", "cutoff", "expired_partitions", "last_run"]},
                    "status",
                ),
                **ADMIN_ERRORS,
            },
        }
    },
    "/cleanup/run": {
        "post": {
            "summary": "Admin: apply retention now: drop day partitions past RETENTION_DAYS whose rows are exported",
            "security": ADMIN,
            "responses": {
                "200": _json({"type": "object", "required": ["status", "dropped", "kept_unexported"]}, "done"),
                "409": _error("`stage_running`: the export stage (which retention follows) is running elsewhere"),
                **ADMIN_ERRORS,
            },
        }
    },
}


def document(settings: Settings) -> dict[str, Any]:
    """The whole OpenAPI document for these settings."""
    tracker = {
        "get": {
            "summary": 'The JavaScript tracker (paste `<script src="..."></script>` into a page)',
            "responses": {
                "200": {
                    "description": "the script",
                    "content": {"application/javascript": {"schema": {"type": "string"}}},
                },
                "304": {"description": "not modified (If-None-Match)"},
            },
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Collection API",
            "version": __version__,
            "description": "Collector of website tracking events; docs/api.md says the behaviour behind each code.",
        },
        "paths": {**PATHS, settings.collect_alias_path: COLLECT, settings.tracker_path: tracker},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "ADMIN_TOKEN"}},
        },
    }
