"""The front doors of other tracking protocols (Segment, Snowplow, Plausible), one module each, on `FrontDoor`.

Each reads its protocol's request, maps it (collector.ingest.mapping) and hands the events to Ingest exactly as
/collect does; what is its own is the paths, the write key (Segment) and the answers' shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from collector.settings import Settings

if TYPE_CHECKING:
    from collector.edge.protocols.front import FrontDoor
    from collector.ingest.auth import DomainAuthorizer
    from collector.ingest.service import Ingest


def door_paths(settings: Settings) -> frozenset[str]:
    """The paths of the front doors PROTOCOLS turns on (fixed at start: the app routes them before Starlette)."""
    from collector.edge.protocols import plausible, segment, snowplow

    paths: set[str] = set()
    for name, module_paths in (("segment", segment.PATHS), ("snowplow", snowplow.PATHS),
                               ("plausible", plausible.PATHS)):  # fmt: skip
        if name in settings.protocols:
            paths.update(module_paths)
    return frozenset(paths)


def open_doors(settings: Settings, ingest: Ingest, authorizer: DomainAuthorizer) -> dict[str, FrontDoor]:
    """Each served path and its endpoint (one endpoint per protocol, shared by its paths); write keys come from the
    directory the domains come from, under the same cache rules."""
    from collector.edge.protocols import plausible, segment, snowplow
    from collector.ingest.writekeys import WriteKeys

    keys = WriteKeys(
        authorizer.directory, ip_hash_secret=settings.hash_secret, ttl_s=settings.auth_cache_ttl_s,
        negative_ttl_s=settings.auth_negative_ttl_s, stale_max_s=settings.auth_stale_max_s,
        max_entries=settings.auth_cache_size,
    )  # fmt: skip

    doors: dict[str, FrontDoor] = {}
    if "segment" in settings.protocols:
        door: FrontDoor = segment.SegmentDoor(settings, ingest, authorizer, keys)
        doors.update(dict.fromkeys(segment.PATHS, door))
    if "snowplow" in settings.protocols:
        door = snowplow.SnowplowDoor(settings, ingest, authorizer)
        doors.update(dict.fromkeys(snowplow.PATHS, door))
    if "plausible" in settings.protocols:
        door = plausible.PlausibleDoor(settings, ingest, authorizer)
        doors.update(dict.fromkeys(plausible.PATHS, door))
    return doors
