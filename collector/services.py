"""Services: the long-lived objects every handler uses, built by the app's lifespan (collector.app)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from collector.edge.collect import CollectEndpoint
from collector.edge.protocol import Edge
from collector.edge.protocols.front import FrontDoor
from collector.enrich.enricher import Enricher
from collector.ingest.auth import DomainAuthorizer
from collector.ingest.service import Ingest
from collector.ops.metrics import MetricsSync
from collector.settings import Settings
from collector.storage.accounting import Accounting
from collector.storage.buffer import WriteBehindBuffer
from collector.storage.database import EventStore
from collector.storage.spill import Storage

if TYPE_CHECKING:  # an ingest-only worker never imports the pipeline's stages
    from pipeline.scheduler import Pipeline


@dataclass(frozen=True, slots=True)
class Services:
    """The long-lived objects the handlers use, on app.state.services while the app runs."""

    settings: Settings
    store: EventStore
    authorizer: DomainAuthorizer
    buffer: WriteBehindBuffer
    storage: Storage
    accounting: Accounting
    ingest: Ingest
    metrics: MetricsSync
    pipeline: Pipeline | None  # None in ROLE=ingest
    edge: Edge
    collect: CollectEndpoint
    # The other protocols' front doors by path (PROTOCOLS; docs/protocols.md).
    doors: Mapping[str, FrontDoor] = field(default_factory=dict)
    enricher: Enricher | None = None  # None in ROLE=pipeline (storage's thread enriches rows: collector.enrich)
