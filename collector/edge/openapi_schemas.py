"""The component schemas of /openapi.json: the bodies /collect and the admin endpoints answer (edge.openapi)."""

from __future__ import annotations

from typing import Any


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


NULLABLE_TEXT = {"type": "string", "nullable": True}
SCHEMAS: dict[str, Any] = {
    "Index": {
        "type": "object",
        "required": ["service", "version", "links"],
        "properties": {
            "service": {"type": "string"},
            "version": {"type": "string"},
            "links": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string"},
            "detail": {"type": "string"},
            "events_rejected": {"type": "array", "items": ref("EventRejection")},
        },
    },
    "EventRejection": {
        "type": "object",
        "required": ["index", "error"],
        "properties": {"index": {"type": "integer"}, "error": {"type": "string"}},
    },
    "Event": {
        "type": "object",
        "required": ["eventType"],
        "properties": {
            "eventType": {"type": "string", "minLength": 1, "maxLength": 100},
            "eventId": {"type": "string", "format": "uuid"},
            "sessionId": {"type": "string", "maxLength": 256},
            "visitorId": {"type": "string", "maxLength": 256},
            "siteId": {"type": "string", "maxLength": 253},
            "url": {"type": "string", "maxLength": 8192},
            "path": {"type": "string", "maxLength": 4096},
            "referrer": {"type": "string", "maxLength": 8192},
            "timestamp": {"type": "string", "format": "date-time"},
            "eventData": {"type": "object"},
        },
    },
    "EventOrBatch": {
        "description": "One event, or `eventType: batch` with `events` (sub-events inherit the wrapper's fields)",
        "allOf": [
            ref("Event"),
            {
                "type": "object",
                "properties": {
                    "events": {"type": "array", "items": ref("Event"), "maxItems": 500},
                    "consent": {
                        "type": "object",
                        "description": "The request's consent (docs/enrichment.md#consent); not on sub-events",
                        "properties": {"analytics": {"type": "boolean"}, "marketing": {"type": "boolean"}},
                    },
                    "webdriver": {"type": "boolean", "description": "The browser is automated (the tracker sends it)"},
                },
            },
        ],
    },
    "Accepted": {
        "type": "object",
        "required": ["status", "message", "ack", "events_processed", "client_id", "timestamp"],
        "properties": {
            "status": {"type": "string", "enum": ["success"]},
            "message": {"type": "string"},
            "ack": {
                "type": "string",
                "enum": ["buffered", "durable"],
                "description": "`buffered`: in the collector's memory; `durable`: committed to PostgreSQL",
            },
            "events_processed": {"type": "integer", "minimum": 1},
            "client_id": {"type": "string"},
            "timestamp": {"type": "string"},
            "events_rejected": {"type": "array", "items": ref("EventRejection")},
        },
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string"},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "detail": {"type": "string"},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "database", "timestamp", "ack_mode", "buffer", "events", "worker_pid"],
        "properties": {
            "status": {"type": "string", "enum": ["healthy", "unhealthy"]},
            "database": {"type": "string"},
            "timestamp": {"type": "string"},
            "ack_mode": {"type": "string"},
            "buffer": {"type": "object"},
            "events": {"type": "object"},
            "worker_pid": {"type": "integer"},
        },
    },
    "Count": {
        "type": "object",
        "required": ["total_events", "buffered_events", "timestamp"],
        "properties": {
            "total_events": {"type": "integer"},
            "buffered_events": {"type": "integer"},
            "timestamp": {"type": "string"},
            "client_id": {"type": "string"},
            "days": {"type": "array", "items": {"type": "object"}},
        },
    },
    "RecentEvent": {
        "description": "A stored event: what was sent under the names it is sent with, what the server added"
        " (`client_id`, `created_at`: the receive time) in snake_case, as the seed's answers name them",
        "type": "object",
        "required": [
            "eventId",
            "eventType",
            "eventData",
            "sessionId",
            "visitorId",
            "siteId",
            "url",
            "path",
            "referrer",
            "timestamp",
            "client_id",
            "created_at",
        ],
        "properties": {
            "eventId": {"type": "string"},
            "eventType": {"type": "string"},
            "eventData": {"type": "object", "nullable": True},
            "sessionId": NULLABLE_TEXT,
            "visitorId": NULLABLE_TEXT,
            "siteId": {"type": "string"},
            "url": NULLABLE_TEXT,
            "path": NULLABLE_TEXT,
            "referrer": NULLABLE_TEXT,
            "timestamp": {"type": "string"},
            "client_id": {"type": "string"},
            "created_at": {"type": "string"},
        },
    },
    "DeadLetter": {
        "type": "object",
        "required": ["id", "received_at", "reason", "detail", "payload"],
        "properties": {
            "id": {"type": "integer"},
            "received_at": {"type": "string"},
            "reason": {"type": "string"},
            "client_id": NULLABLE_TEXT,
            "domain": NULLABLE_TEXT,
            "detail": {"type": "string"},
            "payload": {"type": "string"},
        },
    },
}
